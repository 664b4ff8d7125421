"""The store: the models, their migrations, and every SQL statement Greenlight runs.

One query module per aggregate; each function takes the caller's session (its unit of
work) and never commits: the use case that opened the transaction does.
"""
