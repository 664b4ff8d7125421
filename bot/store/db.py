"""Database engine and migrations: one place that knows SQLite from PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CursorResult, Engine, Result, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    import psycopg  # the PostgreSQL driver, an optional dependency

MIGRATIONS = Path(__file__).parent / "migrations"

# What callers above the store may catch, without knowing SQLAlchemy: a unique key
# refused a concurrent write (retry the whole use case), or the database failed.
WriteConflict = IntegrityError
StoreUnavailable = SQLAlchemyError


IDLE_IN_TRANSACTION_MS = 5_000  # a sender's transactions never wait this long idle


PG_POOL_SIZE = 16


def database_problem(exc: BaseException, url: str) -> str | None:
    """One line saying what to do when the database at `url` cannot be used (it is not
    running, refuses us, the file cannot be opened, the URL is not one); None when
    `exc` is not about reaching the database."""
    if not isinstance(exc, OperationalError | InterfaceError | ArgumentError):
        return None
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        shown = "(not a URL)"
    original = getattr(exc, "orig", None) or exc
    reason = (str(original).strip().splitlines() or [type(original).__name__])[0]
    return f"cannot use the database {shown}: {reason}; check DATABASE_URL and that it runs"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine tuned for the backend: WAL and foreign keys on SQLite, psycopg 3 on PG."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # As many pooled connections as threads that may hold one at once (the server's
    # default executor, the render pool, the sender's recorder): a smaller pool closes
    # each extra connection on return, and a new PostgreSQL connection costs a few
    # milliseconds of both processes' CPU. Connections are opened only when needed.
    kwargs.setdefault("pool_size", PG_POOL_SIZE)
    kwargs.setdefault("max_overflow", PG_POOL_SIZE)
    engine = create_engine(parsed, **kwargs)
    event.listen(engine, "connect", _server_keepalives)
    return engine


# How soon the server ends a session whose client machine went silent: idle for this
# long, then this many probes this far apart (30 s in all).
SERVER_KEEPALIVE = (15, 5, 3)


def _server_keepalives(dbapi_conn: Any, _record: Any) -> None:
    """Have the server probe this connection, so that it notices a client cut from the
    network within half a minute (the system's default is two hours) and ends its
    transaction: a worker cut in the middle of a pipelined executemany, where no idle
    timeout applies, would otherwise keep its logs' row locks until its link came back.
    Ignored on a Unix socket."""
    idle, interval, count = SERVER_KEEPALIVE
    cur = dbapi_conn.cursor()
    cur.execute(f"SET tcp_keepalives_idle = {idle}")
    cur.execute(f"SET tcp_keepalives_interval = {interval}")
    cur.execute(f"SET tcp_keepalives_count = {count}")
    cur.close()
    dbapi_conn.commit()


def bound_idle(session: Session) -> None:
    """A sender stopped in the middle of this transaction (SIGSTOP, a VM pause) must not
    hold its row locks for ever: on PostgreSQL the server ends the transaction after
    `IDLE_IN_TRANSACTION_MS` idle, so the recovery can take the stopped worker's logs
    over (`bot.jobs.queue`). Only for the sender's short transactions: a long read
    elsewhere may well wait longer between two statements."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text(f"SET LOCAL idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}")
        )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def ours(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's `include_name`: the job engine's tables (procrastinate_*) are its own,
    applied by migration 0009 from its SQL, not described by our models."""
    return not (type_ == "table" and name is not None and name.startswith("procrastinate_"))


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


MIGRATION_LOCK = 0x47_4C_4D_49_47  # "GLMIG"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`; safe to run at every start, by any number of
    processes at once (on PostgreSQL they take turns on an advisory lock)."""
    if engine.dialect.name != "postgresql":
        command.upgrade(_alembic_config(engine), revision)
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
        conn.commit()
        try:
            command.upgrade(_alembic_config(engine), revision)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
            conn.commit()


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(_alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()  # type: ignore[arg-type]


def insert_ignoring_conflicts(
    session: Session, table: Any, index_elements: list[str] | None = None
) -> Any:
    """INSERT … ON CONFLICT DO NOTHING in the session's dialect (SQLite or PostgreSQL).

    The database's unique key then decides, also between concurrent transactions, which
    rows are new: the way every "once" in Greenlight is made.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(index_elements=index_elements)


class BulkInsert:
    """An INSERT run with the driver's own executemany, for a million rows.

    SQLAlchemy prepares each row's parameters in Python (3 to 4 µs a row, more than
    SQLite takes to insert it); here the statement is compiled once and each value is
    converted by its column's type as SQLAlchemy would (`value`), once per distinct
    value where the caller says values repeat.
    """

    def __init__(self, session: Session, statement: Any, columns: Sequence[str]) -> None:
        self._conn = session.connection()
        dialect = self._conn.dialect
        compiled = statement.compile(dialect=dialect, column_keys=list(columns))
        self._sql = str(compiled)
        self._columns = list(columns)
        self._order = (
            [self._columns.index(name) for name in compiled.positiontup or ()]
            if compiled.positional
            else None
        )
        table = statement.table
        # PostgreSQL: COPY, which takes a million rows in a few seconds where even a
        # pipelined executemany sends one INSERT per row.
        self._copy: str | None = None
        if dialect.name == "postgresql":
            quote = dialect.identifier_preparer
            names = ", ".join(quote.quote(name) for name in columns)
            self._copy = f"COPY {quote.format_table(table)} ({names}) FROM STDIN"
        self._processors = {
            name: table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in columns
        }

    def value(self, column: str, value: Any) -> Any:
        """`value` as the driver takes it for `column`."""
        processor = self._processors[column]
        return value if processor is None or value is None else processor(value)

    def run(self, rows: Sequence[Sequence[Any]]) -> None:
        """Insert `rows`, each the converted values in the order of the columns."""
        if not rows:
            return
        if self._copy is not None:
            driver = cast("psycopg.Connection[Any]", self._conn.connection.dbapi_connection)
            with driver.cursor() as cursor, cursor.copy(self._copy) as copy:
                for row in rows:
                    copy.write_row(row)
            return
        if self._order is not None:
            order = self._order
            if order != list(range(len(self._columns))):
                rows = [tuple(row[i] for i in order) for row in rows]
            self._conn.exec_driver_sql(self._sql, list(rows))
        else:
            names = self._columns
            self._conn.exec_driver_sql(
                self._sql, [dict(zip(names, row, strict=True)) for row in rows]
            )


def affected(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE changed: how a compare-and-set tells it won."""
    cursor: CursorResult[Any] = result  # type: ignore[assignment]  # DML gives a cursor
    return cursor.rowcount


def ping(session: Session, *, write: bool = False) -> None:
    """One round trip: raises StoreUnavailable when the database cannot answer.

    `write`: also make a write that changes nothing (the schema version set to itself,
    rolled back), so a database that reads but cannot write is found out.
    """
    session.execute(text("SELECT 1"))
    if write:
        try:
            session.execute(text("UPDATE alembic_version SET version_num = version_num"))
        finally:
            session.rollback()
