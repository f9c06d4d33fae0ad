from datetime import datetime, timezone

import duckdb
import pytest

from casflow.storage import results
from casflow.storage.store import Store


def _row(table, **values):
    base = {"run_id": "r", "run_time": datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc), "flow_run_id": None,
            "dataset": "digits", "dataset_fingerprint": "d", "model": "m", "generator_kind": "gaussian",
            "recipe": "fast", "seed": 0, "samples_fingerprint": "s", "classifier_fingerprint": "c"}
    if table == "per_class":
        base |= {"class_index": 0, "class_name": "zero", "n_train": 10, "n_eval": 4, "top1": 0.5, "top5": 1.0,
                 "top1_ci_low": 0.15, "top1_ci_high": 0.85, "cached": False}
    else:
        base |= {"status": "ok", "cached": False, "cas_top1": 0.5}
    return base | values


def test_duckdb_reads_results_with_hive_partitioning(tmp_path):
    store = Store(str(tmp_path))
    for run_id, day in (("20261122T020000Z-aaaa", 22), ("20261123T020000Z-bbbb", 23)):
        when = datetime(2026, 11, day, 2, 0, tzinfo=timezone.utc)
        results.write_table(store, "per_class", [_row("per_class", run_id=run_id, run_time=when, class_index=c) for c in range(3)],
                            run_id, when)
        results.write_table(store, "summary", [_row("summary", run_id=run_id, run_time=when)], run_id, when)
    rows = duckdb.sql(f"SELECT * FROM read_parquet('{tmp_path}/results/per_class/**/*.parquet', hive_partitioning=true) "
                      "ORDER BY run_id, class_index").fetchall()
    assert len(rows) == 6
    columns = duckdb.sql(f"SELECT * FROM read_parquet('{tmp_path}/results/summary/**/*.parquet', hive_partitioning=true)").columns
    assert {"run_id", "run_time", "cas_top1", "cas_ratio_top1", "date", "run"} <= set(columns)
    typed = duckdb.sql(f"SELECT typeof(run_time), typeof(top1), typeof(cached), typeof(class_index) "
                       f"FROM read_parquet('{tmp_path}/results/per_class/**/*.parquet', hive_partitioning=true) LIMIT 1").fetchall()[0]
    assert typed == ("TIMESTAMP WITH TIME ZONE", "DOUBLE", "BOOLEAN", "INTEGER")
    assert results.run_ids(store) == ["20261122T020000Z-aaaa", "20261123T020000Z-bbbb"]
    assert results.read_run(store, "summary", "20261122T020000Z-aaaa").num_rows == 1


def test_runs_of_one_second_are_ordered_by_run_time_not_by_their_ids(tmp_path):
    """Two runs that started in the same second: their ids differ only in a random tail, which sorts opposite
    to their start times here. The latest run, every table's row order and the previous run follow the time."""
    store = Store(str(tmp_path))
    second = datetime(2026, 12, 1, 2, 0, 0, tzinfo=timezone.utc)
    earlier, later = ("20261201T020000Z-ffffffff", second.replace(microsecond=100_000)), \
        ("20261201T020000Z-00000000", second.replace(microsecond=900_000))
    before = ("20261130T020000Z-99999999", datetime(2026, 11, 30, 2, 0, tzinfo=timezone.utc))
    for run_id, when in (later, before, earlier):
        results.write_table(store, "summary", [_row("summary", run_id=run_id, run_time=when)], run_id, when)
        results.write_table(store, "per_class", [_row("per_class", run_id=run_id, run_time=when)], run_id, when)
    in_order = [before[0], earlier[0], later[0]]
    assert results.run_ids(store) == in_order
    assert results.read_all(store, "summary").column("run_id").to_pylist() == in_order
    assert results.read_all(store, "per_class").column("run_id").to_pylist() == in_order


def test_rows_that_break_the_schema_are_refused(tmp_path):
    store = Store(str(tmp_path))
    with pytest.raises(ValueError):  # pyarrow's ArrowInvalid
        results.write_table(store, "per_class", [_row("per_class", n_eval="four")], "r", datetime.now(timezone.utc))
    assert results.run_ids(store) == []


def test_disk_full_leaves_no_temporary_parquet(small_disk):
    import errno

    from casflow.storage.store import is_transient
    from helpers import fill

    disk = small_disk(64 * 1024)
    store = Store(str(disk / "store"))
    fill(disk)
    when = datetime(2026, 11, 29, tzinfo=timezone.utc)
    for table in ("per_class", "summary"):
        with pytest.raises(OSError) as info:
            results.write_table(store, table, [_row(table)], "r", when)
        assert info.value.errno == errno.ENOSPC and not is_transient(info.value)
        assert f"results/{table}/date=2026-11-29/run=r/part-0.parquet" in str(info.value)  # names the file
    assert not [p for p in (disk / "store").rglob("*") if p.is_file()]  # no empty temporary Parquet files


def test_files_from_before_series_and_step_read_with_them_null(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = Store(str(tmp_path))
    old_when, new_when = (datetime(2026, 11, day, 2, 0, tzinfo=timezone.utc) for day in (22, 23))
    old_schema = pa.schema([f for f in results.SUMMARY_SCHEMA if f.name not in ("series", "step")])
    old = tmp_path / store.results_location("summary", "2026-11-22", "20261122T020000Z-aaaa")
    old.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([_row("summary", run_id="20261122T020000Z-aaaa", run_time=old_when)],
                                        schema=old_schema), old)
    results.write_table(store, "summary", [_row("summary", run_id="20261123T020000Z-bbbb", run_time=new_when, model="m@7",
                                                series="m", step=7)], "20261123T020000Z-bbbb", new_when)
    assert [(r["series"], r["step"]) for r in results.read_all(store, "summary").to_pylist()] == [(None, None), ("m", 7)]
    rows = duckdb.sql(f"SELECT model, series, step FROM read_parquet('{tmp_path}/results/summary/**/*.parquet', "
                      "union_by_name=true) ORDER BY run_time").fetchall()
    assert rows == [("m", None, None), ("m@7", "m", 7)]
