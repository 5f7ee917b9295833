#!/usr/bin/env bash
# Runs real C programs on pagekeep-slab through LD_PRELOAD and compares their output with a
# run on the system allocator: python3 (dicts, lists, strings, a JSON round trip) and
# sqlite3 (tables, thousands of inserts, indexes, aggregate queries). Fails loudly on any
# difference, crash or non-zero exit.
#
# Usage: slab-alloc/capi/tests/preload.sh   (from anywhere; needs python3 and sqlite3)
set -euo pipefail
cd "$(dirname "$0")/../../.."

fail() { printf 'preload.sh: FAILED: %s\n' "$*" >&2; exit 1; }

cargo build --release -p pagekeep-slab-capi
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
lib="$target_dir/release/libpagekeep_slab_capi.so"
[ -f "$lib" ] || fail "$lib was not built"
command -v sqlite3 >/dev/null || fail "sqlite3 is not installed (apt-get install -y sqlite3)"
python=$(python3 -c 'import sys; print(sys.executable)')

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/workload.py" <<'PY'
import hashlib, json, random

random.seed(12345)
digest = hashlib.sha256()
records = []
for i in range(60000):
    record = {
        "id": i,
        "name": "user-%d-%s" % (i, "x" * (i % 37)),
        "tags": [str(j) * (j % 5 + 1) for j in range(i % 11)],
        "score": random.random(),
        "nested": {"a": list(range(i % 23)), "b": {"c": "deep" * (i % 7)}},
    }
    records.append(record)
index = {r["name"]: r for r in records}
del records[::3]
text = json.dumps(records, sort_keys=True)
back = json.loads(text)
assert back == records
words = " ".join(r["name"] for r in back).split()
counts = {}
for w in words:
    counts[w[:8]] = counts.get(w[:8], 0) + 1
big = ["%08d" % n for n in range(200000)]
joined = "".join(big)
digest.update(text.encode())
digest.update(repr(sorted(counts.items())).encode())
digest.update(joined[::997].encode())
digest.update(str(len(index)).encode())
# Threads that allocate, hand objects to the main thread and exit.
import threading
results = [None] * 4
def work(n):
    local = {("k%d" % i): [n] * (i % 9) for i in range(20000)}
    results[n] = sorted(local.items())[: 50]
threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
digest.update(repr(results).encode())
print("python checksum", digest.hexdigest(), len(back), len(counts))
PY

cat > "$work/workload.sql" <<'SQL'
PRAGMA journal_mode = MEMORY;
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, joined INTEGER);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER REFERENCES customers(id),
                     amount REAL, item TEXT, note TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
INSERT INTO customers (name, city, joined)
SELECT 'customer-' || i, 'city-' || (i % 97), 1600000000 + i * 37 FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
INSERT INTO orders (customer, amount, item, note)
SELECT 1 + (i * 7919) % 5000, (i % 1000) / 10.0, 'item-' || (i % 313),
       printf('%.*c', i % 200, 'n') FROM n;
CREATE INDEX orders_by_customer ON orders(customer);
CREATE INDEX customers_by_city ON customers(city);
SELECT count(*), round(sum(amount), 2), round(avg(amount), 4), max(length(note)) FROM orders;
SELECT c.city, count(o.id), round(sum(o.amount), 2)
  FROM customers c JOIN orders o ON o.customer = c.id
  GROUP BY c.city ORDER BY 3 DESC, 1 LIMIT 10;
SELECT item, count(*) AS n FROM orders GROUP BY item HAVING n > 127 ORDER BY n DESC, item LIMIT 5;
UPDATE orders SET note = upper(note) || '!' WHERE id % 3 = 0;
DELETE FROM orders WHERE amount > 90;
SELECT count(*), sum(length(note)) FROM orders;
SELECT group_concat(name, ',') FROM (SELECT name FROM customers WHERE city = 'city-5' ORDER BY id LIMIT 20);
VACUUM;
SELECT count(*) FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer = c.id AND o.amount > 50);
SQL

run() { # name, then the command; writes $work/$name.{plain,preload}
    local name=$1; shift
    "$@" > "$work/$name.plain" 2>&1 || fail "$name failed without LD_PRELOAD: $(tail -5 "$work/$name.plain")"
    local status=0
    env LD_PRELOAD="$lib" "$@" > "$work/$name.preload" 2>&1 || status=$?
    [ "$status" -eq 0 ] || fail "$name exited with status $status under LD_PRELOAD: $(tail -5 "$work/$name.preload")"
    if ! cmp -s "$work/$name.plain" "$work/$name.preload"; then
        diff "$work/$name.plain" "$work/$name.preload" | head -20 >&2
        fail "$name printed something else under LD_PRELOAD"
    fi
    printf 'preload.sh: %s ok: %s\n' "$name" "$(head -c 160 "$work/$name.plain" | tr '\n' ' ')"
}

# Proof that the library is really in use: malloc_usable_size of a 1-byte block is
# 16 on pagekeep-slab (class 32 minus the 16-byte prefix), 24 on glibc.
usable=$(env LD_PRELOAD="$lib" "$python" -c 'import ctypes; c = ctypes.CDLL(None); c.malloc.restype = ctypes.c_void_p; c.malloc_usable_size.argtypes = [ctypes.c_void_p]; print(c.malloc_usable_size(c.malloc(1)))')
[ "$usable" = 16 ] || fail "LD_PRELOAD did not take effect (malloc_usable_size(malloc(1)) = $usable)"

run python "$python" "$work/workload.py"
run sqlite-memory sqlite3 :memory: ".read $work/workload.sql"
rm -f "$work/db.plain" "$work/db.preload"
run sqlite-file sh -c "rm -f '$work/db'; sqlite3 '$work/db' '.read $work/workload.sql'"
echo "preload.sh: all programs gave identical output under LD_PRELOAD"
