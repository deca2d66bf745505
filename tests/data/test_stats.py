"""posejax.data.stats: the numbers behind docs/synthetic_people.md."""

import numpy as np

from posejax.data import schema, stats
from posejax.data.render import SceneConfig, render_scene


def test_people_stats_counts_labelled_people_and_coco_area_ranges(tmp_path):
    scenes = [render_scene(np.random.default_rng([3, i]), SceneConfig()) for i in range(6)]
    scenes[0][schema.IGNORE][0] = True  # ignored people are not counted
    result = stats.people_stats(scenes)
    expected = sum(len(s[schema.AREA]) for s in scenes) - 1
    assert len(result["areas"]) == len(result["heights"]) == expected
    assert result["people"].sum() == expected and len(result["people"]) == 6
    table = stats.summary_table(result)
    small = np.mean(result["areas"] < 32**2)
    assert f"| small, area < 32^2 | {small:.1%} |" in table
    png = stats.plot_stats(result, tmp_path / "people.png", title="t")
    assert png.stat().st_size > 0
