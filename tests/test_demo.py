"""`act3d demo --quick`: the whole pipeline end to end, at smoke-run budgets."""

import json

from act3d.cli import main
from act3d.demo import run_demo


def test_demo_quick_writes_report_and_pictures(tmp_path):
    result = run_demo(tmp_path, quick=True, seed=0, threads=1)
    assert result.report.is_file()
    text = result.report.read_text(encoding="utf-8")
    for heading in ("## Stage I", "## Stage II", "## Downstream", "## Pictures"):
        assert heading in text
    figures = result.report.parent / "figures"
    expected = {"stage1_reconstruction.png", "stage2_masking.png", "confusion.png", "tsne.png"}
    written = {p.name for p in figures.glob("*.png") if p.stat().st_size > 1000}
    assert expected <= written
    for name in expected:
        assert f"figures/{name}" in text
    metrics = json.loads((result.report.parent / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["stage1_val_cd_l1_first_epoch"] > 0
    assert set(metrics["finetune"]) == {"pretrained", "scratch"}
    assert metrics["finetune"]["pretrained"]["backbone_keys_loaded"] > 0
    assert metrics["finetune"]["scratch"]["backbone_keys_loaded"] == 0
    for probe in metrics["probe"].values():
        assert 0.0 <= probe["accuracy"] <= 1.0


def test_demo_is_a_command(capsys):
    try:
        main(["demo", "--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert "--quick" in capsys.readouterr().out
