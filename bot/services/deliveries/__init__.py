"""Use cases about deliveries: their lifecycle, preparation, sending and views."""
