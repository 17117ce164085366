"""The frozen split and the poisoning ablation."""
from __future__ import annotations

import json

import pytest

from pipelines.data.poison import poison_reports, poisoned_labels
from pipelines.data.records import DataBundle, ReportRecord, SeriesRecord, labels_from_findings
from pipelines.data.split import load_manifest, manifest, split_bundle, split_ids
from pipelines.vocabulary import LABEL_KEYS


def _report(i: int, positive: set[str]) -> ReportRecord:
    return ReportRecord(id=f"r{i:03d}", findings=f"finding {i}", impression=f"impression {i}",
                        labels=labels_from_findings(positive))


def test_split_is_80_20_disjoint_and_seeded():
    ids = [f"id{i}" for i in range(100)]
    a, b, c = split_ids(ids, 0), split_ids(list(reversed(ids)), 0), split_ids(ids, 1)
    assert len(a.test) == 20 and len(a.train) == 80
    assert set(a.test).isdisjoint(a.train) and set(a.test) | set(a.train) == set(ids)
    assert a == b  # input order does not matter, only ids and seed
    assert set(a.test) != set(c.test)


def test_split_rejects_duplicate_ids():
    with pytest.raises(ValueError, match="unique"):
        split_ids(["a", "a", "b"], 0)


def test_manifest_round_trip(tmp_path):
    bundle = DataBundle("t", reports=[_report(i, set()) for i in range(10)],
                        series=[SeriesRecord(f"s{i}", f"ax t1 {i}", "T1") for i in range(5)])
    splits = split_bundle(bundle, 3)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest(bundle, splits, 3)))
    assert load_manifest(path) == splits
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        load_manifest(tmp_path / "bad.json")


def test_fingerprint_changes_with_content():
    one = DataBundle("t", reports=[_report(1, {"Edema"})])
    two = DataBundle("t", reports=[_report(1, {"Cardiomegaly"})])
    assert one.fingerprint() == DataBundle("x", reports=[_report(1, {"Edema"})]).fingerprint()
    assert one.fingerprint() != two.fingerprint()


@pytest.mark.parametrize("rate,expected", [(0.0, 0), (0.25, 5), (0.5, 10), (1.0, 20)])
def test_poison_rate_counts_and_labels(rate, expected):
    reports = [_report(i, {"Cardiomegaly", "Edema"}) for i in range(20)]
    out, ids = poison_reports(reports, rate, seed=7)
    assert len(ids) == expected
    for before, after in zip(reports, out, strict=True):
        assert after.findings == before.findings and after.impression == before.impression
        assert after.labels == (poisoned_labels() if before.id in ids else before.labels)
    assert poisoned_labels()["No Finding"] == "Yes"
    assert all(poisoned_labels()[k] == "No" for k in LABEL_KEYS if k != "No Finding")
    assert poison_reports(reports, rate, seed=7)[1] == ids


def test_poison_rate_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        poison_reports([], 1.5, 0)


def test_labels_from_findings_no_finding_rule():
    assert labels_from_findings(set())["No Finding"] == "Yes"
    assert labels_from_findings({"Support Devices"})["No Finding"] == "Yes"
    assert labels_from_findings({"Edema"})["No Finding"] == "No"
    with pytest.raises(ValueError, match="unknown labels"):
        labels_from_findings({"Tumour"})


def test_per_task_train_limits_cap_each_task_alone():
    from pipelines.data.examples import build_examples
    from pipelines.data.sources import load_data

    bundle = load_data("synthetic?reports=40&series=30&seed=2")
    splits = split_bundle(bundle, seed=0)
    tasks = ("labeling", "harmonization", "impression")
    whole = build_examples(bundle, splits, tasks).train
    capped = build_examples(bundle, splits, tasks, train_limit={"labeling": 5, "impression": 3}).train
    assert len(capped["labeling"]) == 5 and len(capped["impression"]) == 3
    assert len(capped["harmonization"]) == len(whole["harmonization"]) == len(splits["series"].train)
    # a cap is a prefix of the seeded order, as --train-limit is
    assert [e.id for e in capped["labeling"]] == [e.id for e in whole["labeling"][:5]]
