from __future__ import annotations

from pathlib import Path

from streams.memory import process_memory
from streams.settings import Settings
from streams.statestore import AccountStore


def test_process_memory_follows_what_the_process_holds() -> None:
    # Linux, as every worker runs: the figures come from /proc/self/status.
    before = process_memory()
    assert before["rss"] >= before["anonymous"] + before["file"] - 2**20  # shmem aside
    assert before["rss_peak"] >= before["rss"] > 0
    # One 256 MiB block: glibc maps it fresh whatever the heap has free, and filling it
    # with zeros makes it resident. Three quarters of it must show: the rest of the
    # process may give memory back meanwhile (most likely threads of the embedded
    # ClickHouse engine earlier tests started; 16 MiB once, with a 64 MiB block).
    held = bytearray(256 * 2**20)
    blocks = [object() for _ in range(50_000)]
    after = process_memory()
    assert after["anonymous"] - before["anonymous"] > 192 * 2**20
    assert after["python_blocks"] - before["python_blocks"] > 45_000  # others come and go
    del blocks
    del held


def test_rocksdb_memory_is_summed_over_the_partitions_held(tmp_path: Path) -> None:
    store = AccountStore(Settings(state_dir=tmp_path))
    assert store.memory() == {"memtables": 0, "block_cache": 0, "table_readers": 0}
    for partition in (0, 1):
        db = store._dbs[partition] = store._open(partition)
        for i in range(1_000):
            db[f"org\x1fkey_{i}".encode()] = bytes(200)
    each = [db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
            for db in store._dbs.values()]
    assert min(each) > 200_000  # the rows are in the memtables
    assert store.memory()["memtables"] == sum(each)
    store.close_partitions([0])
    assert store.memory()["memtables"] == each[1]
    store.close()
