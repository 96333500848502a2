"""MODEL_CARD.md is built from a checkpoint's card: every run, the metrics, the notes."""

import json
import shutil

import pytest

from wm_envs.checkpoint import MODEL_CARD, SHIPPED, read_card, write_model_card
from wm_envs.model_card import render_model_card


@pytest.fixture
def card_folder(tiny_checkpoint, tmp_path):
    """A copy of the tiny checkpoint whose card continues an earlier run, with notes and a
    compare headline."""
    folder = tmp_path / "rssm"
    shutil.copytree(tiny_checkpoint, folder)
    card = json.loads((folder / "card.json").read_text())
    earlier_config = {**card["config"], "state_weight": card["config"]["state_weight"] + 1}
    card["recipe"]["command"] = "wm-envs train --out runs/second --init-from runs/first"
    card["recipe"]["history"] = [
        {
            "command": "wm-envs train --out runs/first --steps 7",
            "stage": "all",
            "updates": 7,
            "wall_time_s": 12.0,
            "config": earlier_config,
        }
    ]
    card["notes"] = ["The decoder paints over a median background.", "It misses 30 dB."]
    card["compare"] = {
        "config": {"seed": 100_000, "episodes": 20, "horizon": 15},
        "headline": {"first_frame": {"psnr_1": 29.4724, "success_agreement": 0.9}},
    }
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_write_model_card_renders_every_part_of_the_card(card_folder):
    path = write_model_card(card_folder)
    text = path.read_text()
    card = read_card(card_folder)
    size_mb = (card_folder / "model.safetensors").stat().st_size / 1e6
    assert path == card_folder / MODEL_CARD
    assert text.startswith(f"# rssm-{card['task']}: model card")
    assert f"trained on `{card['env_id']}`" in text
    assert f"{card['recipe']['parameters']:,}" in text
    assert f"{size_mb:.1f} MB" in text
    assert card["dataset"]["id"] in text
    # both runs, the earlier first, with the model-config change between them
    assert text.index("Run 1 of 2") < text.index("wm-envs train --out runs/first --steps 7")
    assert text.index("Run 2 of 2") < text.index(card["recipe"]["command"])
    weight = card["config"]["state_weight"]
    change = f"`state_weight` {weight + 1} -> {weight}"
    assert f"Model config changes from run 1: {change}." in text
    # training metrics with the copy baseline beside
    metrics = card["metrics"]
    row = f"| `psnr_1step` | {metrics['val/psnr_1step']:.2f} | "
    assert row + f"{metrics['val/copy_psnr_1step']:.2f} |" in text
    # the compare headline and the notes
    assert "seeds 100000-100019" in text
    assert "| `psnr_1` | 29.47 |" in text
    assert "| `success_agreement` | 0.9 |" in text
    assert "The decoder paints over a median background.\n\nIt misses 30 dB." in text
    assert [p.name for p in card_folder.iterdir() if p.name.startswith(".")] == []


def test_stage_updates_are_what_the_last_run_trained(card_folder):
    """A continuation told ``--stage-steps dynamics=0,heads=400`` trains the heads alone: the
    row lists that, not the ``--steps`` the stages it never ran would have taken."""
    card = read_card(card_folder)
    assert "stage updates" not in render_model_card(card)  # a single-stage model
    card["recipe"]["train_config"] |= {"stage_steps": "dynamics=0,heads=400", "steps": 400}
    card["recipe"]["updates_by_stage"] = {"heads": 400}
    assert "| stage updates | heads 400 |" in render_model_card(card)


def test_a_card_without_notes_or_compare_renders_without_those_sections(tiny_checkpoint):
    text = render_model_card(read_card(tiny_checkpoint))
    assert "## Recipe" in text and "Run 1 of 1" in text
    assert "## Notes" not in text and "## Against physics" not in text
    assert "MB (`model.safetensors`)" not in text  # no weights size given


@pytest.mark.parametrize("notes", ["one string", [1, 2]])
def test_notes_that_are_not_a_list_of_paragraphs_are_refused(tiny_checkpoint, notes):
    card = {**read_card(tiny_checkpoint), "notes": notes}
    with pytest.raises(ValueError, match="list of paragraphs"):
        render_model_card(card)


@pytest.mark.parametrize("key", ["model", "task"])
def test_a_card_missing_a_key_is_refused_with_its_name(tiny_checkpoint, key):
    """A card without its model or task cannot say what it is; a hand-made card without a
    recipe still renders (see the next test)."""
    card = {k: v for k, v in read_card(tiny_checkpoint).items() if k != key}
    with pytest.raises(ValueError, match=f"needs '{key}'"):
        render_model_card(card)


@pytest.mark.parametrize("name", ["rssm-grasp", "genie-grasp", "symbolic-grasp"])
def test_shipped_model_cards_are_up_to_date_with_their_cards(name):
    folder = SHIPPED / name
    size = (folder / "model.safetensors").stat().st_size
    expected = render_model_card(read_card(folder), size)
    assert (folder / MODEL_CARD).read_text() == expected, (
        f'{folder / MODEL_CARD} is stale: run `python -c "from wm_envs.checkpoint import '
        f"write_model_card; write_model_card('{folder}')\"`"
    )


def test_a_card_without_a_recipe_says_so(tiny_checkpoint):
    card = {k: v for k, v in read_card(tiny_checkpoint).items() if k != "recipe"}
    assert "(command not recorded)" in render_model_card(card)
