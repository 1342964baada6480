"""The report's data is built apart from its rendering, states its statistics, puts the summary
first and folds the tables without enough data into one list."""
import pytest

from analysis.pipeline import analyse
from analysis.reportdata import build
from analysis.render import render
from analysis.synthetic import grid, write_run


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    trials = grid(seeds=2, arch=["resnet18", "vgg11"], lr=[1e-3, 1e-1], bias_level=[0.0, 0.9])
    trials[0].update(status="oom", error="CUDA out of memory: tried to allocate 2 GiB")
    trials[1].update(learned_nothing=True)
    run = write_run(tmp_path_factory.mktemp("rd") / "run", trials)
    return analyse(run, metrics=["test_worst_group_acc", "train_nc1"], fanova=False, correction="bh")


def test_doc_is_plain_data_with_summary_statistics_and_metadata(result):
    doc = build(result, "t")
    s = doc["statistics"]
    assert "HC3" in s["ci"] and "Benjamini" in s["correction"] and s["references"] == [["arch", "resnet18"]]
    assert "bootstrap over configurations" in s["boot_ci"]
    assert "1 status oom" in s["excluded"] and "learned nothing" in s["excluded"]
    found = doc["summary"]["findings"]
    overall = [t for t in result["tables"] if t.subset == "all"]
    assert len(found) == sum(int((t.effects.p_adj < 0.05).sum()) for t in overall)   # only what survives correction
    wga = [f for f in found if f["metric"] == "test_worst_group_acc"]
    assert [abs(f["effect"]) for f in wga] == sorted((abs(f["effect"]) for f in wga), reverse=True)
    bias = next(f["sentence"] for f in wga if "bias_level" in f["sentence"])
    # planted: −0.4 × 0.9 = −0.36 of worst-group accuracy from bias 0 to 0.9 (noise SD 0.02)
    assert bias.startswith("test worst_group_acc falls from 0.") and bias.endswith("from bias_level 0 to 0.9")
    diff = float(bias.split("(")[1].split(",")[0].replace("−", "-"))
    assert diff == pytest.approx(-0.36, abs=0.03)
    assert "C(" not in " ".join(f["sentence"] for f in found)                           # no patsy names
    assert doc["summary"]["leaderboard"]["label"].startswith("test worst_group_acc")
    board = doc["summary"]["leaderboard"]
    ranked = board["columns"].index("val worst_group_acc ↑ (ranked on)")
    for cond in ("bias_level=0.0", "bias_level=0.9"):                              # best (higher) first in each
        vals = [float(r[ranked]) for r in board["rows"] if r[0] == cond]
        assert len(vals) >= 3 and vals == sorted(vals, reverse=True)
    failed = doc["metadata"]["failed"]["rows"]
    assert failed == [["tresnet18-0.001-0.0-s0", "oom", "CUDA out of memory: tried to allocate 2 GiB"]]
    assert [r for r in doc["metadata"]["statuses"] if r[0] == "oom"] == [["oom", 1]]
    assert doc["contents"][0] == ("summary", "Summary")


def test_insufficient_tables_fold_into_one_list(tmp_path):
    trials = grid(seeds=1, arch=["resnet18", "vgg11"], lr=[1e-3, 1e-1], bias_level=[0.0, 0.9])[:6]
    res = analyse(write_run(tmp_path / "run", trials), metrics=["test_worst_group_acc", "train_nc1"], fanova=False)
    doc = build(res, "t")
    folded = {g["reason"]: g["tables"] for g in doc["insufficient"]}
    # 6 trials: overall (4 parameters) fits; resnet18 (4 trials, 3 parameters) could, but has one seed per
    # configuration (a per-architecture fit needs 2); vgg11 (2 trials, 2 parameters) cannot
    assert folded == {"a configuration with 1 trial(s): a per-architecture fit needs at least 2 (seeds) in every "
                      "configuration": ["test_worst_group_acc (arch=resnet18)", "train_nc1 (arch=resnet18)"],
                      "2 trials for 2 parameters: too few to fit (need more than 2)":
                      ["test_worst_group_acc (arch=vgg11)", "train_nc1 (arch=vgg11)"]}
    for fam in doc["families"]:
        assert all(t["rows"] for t in fam["tables"])          # sections hold fitted tables only


def test_rendered_pages_state_units_reference_and_correction(result, tmp_path):
    html, md = render(build(result, "title <x>"), tmp_path)
    page = html.read_text()
    assert "title &lt;x&gt;" in page                                   # escaped
    assert page.index('id="summary"') < page.index('id="contents"')
    for text in ("HC3", "Benjamini", "Reference levels", "resnet18", "Units", "oom", "CUDA out of memory"):
        assert text in page, text
    summary = md.read_text()
    assert summary.startswith("# title <x>") and "## Summary" in summary and "Leaderboard" in summary


def test_a_registered_section_is_rendered_and_listed_in_the_contents(result, tmp_path, monkeypatch):
    from analysis import reportdata

    monkeypatch.setattr(reportdata, "SECTIONS", {})
    reportdata.register_section("verdicts", "Study verdicts", lambda res: {
        "text": [f"{len(res['trials'])} trials <judged>"],
        "tables": [{"caption": "primary outcome", "columns": ["outcome", "verdict"], "rows": [["wga", "supported"]]}]})
    reportdata.register_section("empty", "Never shown", lambda res: None)
    doc = build(result, "t")
    assert ("verdicts", "Study verdicts") in doc["contents"] and ("empty", "Never shown") not in doc["contents"]
    html, md = render(doc, tmp_path)
    page = html.read_text()
    assert '<section id="verdicts"><h2>Study verdicts</h2>' in page and "16 trials &lt;judged&gt;" in page
    assert "<td>supported</td>" in page
    assert "## Study verdicts" in md.read_text() and "| wga | supported |" in md.read_text()
