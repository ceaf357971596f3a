"""The fleet engine: the same table in PostgreSQL (a DSN such as
postgresql://netsentinel@db.example/netsentinel), for a central history of
many hosts. psycopg 3 is imported only when a DSN asks for it."""

from __future__ import annotations

from .base import EventStore, Retention

CONNECT_TIMEOUT_S = 5
MIGRATION_LOCK = 7150615
PROCS_LOCK = 7150616


def _psycopg():
    try:
        import psycopg
    except ImportError as e:
        raise ImportError("a postgresql:// store needs psycopg: "
                          "`.venv/bin/pip install -r requirements.txt`") from e
    return psycopg


class PostgresEventStore(EventStore):
    engine = "postgres"
    ph = "%s"

    def __init__(self, dsn: str, retention: Retention | None = None, *, readonly: bool = False):
        psycopg = _psycopg()
        self.dsn = dsn
        conn = psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S)
        super().__init__(conn, retention)
        if readonly:
            conn.read_only = True
        else:
            # Two writers starting together must not both create the table.
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            try:
                self.migrate()
            finally:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
                conn.commit()

    def _lock_procs(self, cur, exclusive: bool) -> None:
        # Inserts share it, retention's pruning of procs takes it alone
        # (both until their commit): a pair pruned while another writer's
        # uncommitted rows name it would leave those rows out of a process
        # filter. Taken after it, an insert adds the pair back.
        cur.execute(f"SELECT pg_advisory_xact_lock{'' if exclusive else '_shared'}(%s)",
                    (PROCS_LOCK,))

    def columns(self, table: str) -> set[str]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                        "AND table_schema = current_schema()", (table,))
            return {r[0] for r in cur.fetchall()}

    def _end_read(self) -> None:
        # psycopg opens a transaction on the first SELECT; a reader ends it at
        # once, so it neither holds a snapshot nor blocks vacuum.
        if self.conn.info.transaction_status == self._psycopg_status().INTRANS:
            self.conn.rollback()

    @staticmethod
    def _psycopg_status():
        return _psycopg().pq.TransactionStatus

    def size_bytes(self) -> int:
        """The table's size times its live share: deleted rows stay in the
        files until vacuum makes their space reusable, so the file size alone
        would make retention delete everything (approximate: the statistics
        trail by up to a second)."""
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_total_relation_size('events'), n_live_tup, n_dead_tup "
                        "FROM pg_stat_user_tables WHERE relid = 'events'::regclass")
            row = cur.fetchone()
        if row is None:
            return 0
        total, live, dead = (int(v or 0) for v in row)
        return total if live + dead == 0 else total * live // (live + dead)


def is_connection_error(e: BaseException) -> bool:
    psycopg = _psycopg()
    return isinstance(e, psycopg.OperationalError)
