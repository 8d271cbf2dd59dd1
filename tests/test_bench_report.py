"""bench/report.py keeps a quality figure from answering for defaults it was not measured with."""

from bench.report import default_model, default_options, quality_row


def quality_run(model: str, train_args: object = "defaults", **fields) -> dict:
    return {"device": "cuda", "device_name": "GPU", "val_loss": 1.37, "steps": 1000, "budget": "5m",
            "date": "2026-11-28", "model": model, "train_args": train_args,
            "metrics": [{"step": 1000, "val_loss": 1.37}], **fields}


def todays_options(**changes) -> dict:
    """The options a 5-minute run of today's defaults records, with `changes`."""
    return {**default_options(), **changes, "max_epochs": None, "max_steps": None, "max_time": 300.0}


def test_a_run_of_todays_defaults_answers_its_row():
    for run in (quality_run(default_model()), quality_run(default_model(), options=todays_options())):
        row = quality_row(run, "val loss", 1.38, "GPU", "cmd")
        assert row[2].startswith("1.3700 after 1,000 steps") and row[3] == "met"


def test_a_run_of_former_defaults_stays_on_record_but_is_not_todays_figure():
    row = quality_row(quality_run("lstm 3x1024"), "val loss", 1.38, "GPU", "cmd")
    assert row[3] == "not measured"
    assert row[2].startswith(f"not measured with the current defaults (changed since: model lstm 3x1024 → "
                             f"{default_model()})")
    assert "the former defaults: 1.3700 after 1,000 steps" in row[2] and row[2].endswith("lstm 3x1024, met")
    # A run that recorded its options is compared option by option, not only by its model.
    former_rate = default_options()["lr"] / 2
    row = quality_row(quality_run(default_model(), options=todays_options(lr=former_rate)),
                      "val loss", 1.38, "GPU", "cmd")
    assert row[3] == "not measured" and f"lr {former_rate} → {former_rate * 2}" in row[2]


def test_a_run_with_options_is_labelled_and_not_taken_for_the_defaults():
    row = quality_row(quality_run("lstm 3x1024", {"CHARRNN_TRAIN_HIDDEN": "1024"}), "val loss", 1.38, "GPU", "cmd")
    assert row[3] == "met" and "**not the defaults**" in row[2]
