# How long one pruning statement of jobscope (`store::queries::PRUNE_CHUNK` rows) holds SQLite's
# write lock, against one DELETE of everything (what retention did before). Python's sqlite3 over
# a table shaped as `events` (migrations/sqlite), 1,000,000 old rows. Run: python3 bench/sqlite_prune.py
import sqlite3, time, os, statistics
path = '/tmp/prune-probe.db'
for suffix in ('', '-wal', '-shm'):
    try: os.remove(path + suffix)
    except FileNotFoundError: pass
db = sqlite3.connect(path, isolation_level=None)
db.execute('PRAGMA journal_mode=WAL'); db.execute('PRAGMA synchronous=NORMAL')
db.execute('CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, occurred_at TEXT NOT NULL, kind TEXT NOT NULL, job_id TEXT, payload TEXT NOT NULL, sample_id INTEGER)')
db.execute('CREATE INDEX events_time_idx ON events (occurred_at)')
n = 1_000_000
db.execute('BEGIN')
db.executemany('INSERT INTO events (occurred_at, kind, job_id, payload, sample_id) VALUES (?, ?, ?, ?, ?)',
  (('2026-11-01 00:00:%02d.%06d+00:00' % (i % 60, i % 1000000), 'job_sample', 'job-%d' % (i % 2000), '{"state":"running"}', i) for i in range(n)))
db.execute('COMMIT')
times = []
whole = time.perf_counter()
while True:
    t = time.perf_counter()
    c = db.execute("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE occurred_at < '2026-11-02' LIMIT 2000)").rowcount
    times.append((time.perf_counter() - t) * 1000)
    if c < 2000: break
print('statements %d, rows %d, whole %.1f s; per statement ms: p50 %.1f max %.1f' % (len(times), n, time.perf_counter() - whole, statistics.median(times), max(times)))
# One statement for all, as before
db.execute('BEGIN')
db.executemany('INSERT INTO events (occurred_at, kind, job_id, payload, sample_id) VALUES (?, ?, ?, ?, ?)',
  (('2026-11-01 00:00:%02d.%06d+00:00' % (i % 60, i % 1000000), 'job_sample', 'job-%d' % (i % 2000), '{"state":"running"}', i) for i in range(n)))
db.execute('COMMIT')
t = time.perf_counter()
db.execute("DELETE FROM events WHERE occurred_at < '2026-11-02'")
print('one DELETE of %d rows: %.0f ms' % (n, (time.perf_counter() - t) * 1000))
