"""PostgreSQL through asyncpg: one database shared by every bot process, on one machine or many."""
