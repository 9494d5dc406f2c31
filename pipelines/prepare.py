"""DVC stage `prepare`: build the data set (synthetic by default), split it, write the card.

python pipelines/prepare.py                                   # synthetic, 40 patients
python pipelines/prepare.py data=lgg data.root=../shared/data/lgg_sample
python pipelines/prepare.py data=folder data.root=R data.images='images/*.png' ...
"""

from __future__ import annotations

import logging

import hydra

from segloss.cli import stage
from segloss.config import Config
from segloss.data import card
from segloss.data.preparation import prepare

log = logging.getLogger("prepare")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@stage
def main(settings: Config) -> None:
    result = prepare(settings.data, settings.paths.prepared, settings.paths.reports, settings.cv)
    card.write_tables(result.prepared)  # the report's data-card tables, computed once here
    stats = result.calibration
    origin = "generated" if result.generated else "read"
    log.info("%s %s in %.1f s", origin, result.source_dir, result.seconds["generate"])
    mri = settings.data.source != "folder"
    what = "tumour" if mri else "foreground"
    log.info("%d patients, %d slices", stats["patients"], stats["slices"])
    log.info("%s pixels: %.2f %% of all pixels", what, 100 * stats["tumour_pixel_fraction"])
    log.info("slices with %s: %.1f %%", what, 100 * stats["positive_slice_fraction"])
    log.info("%s within positive slices: %.2f %%", what, 100 * stats["tumour_fraction_in_positive"])
    if mri:
        log.info(
            "FLAIR lesion / surrounding brain: %.2f (lesion brighter in %.0f %% of positive "
            "slices)",
            stats["flair_lesion_to_surround"],
            100 * stats["flair_lesion_brighter"],
        )
    log.info("prepared data: %s; data card: %s", result.prepared, result.card)
    log.info("prepare took %.1f s", result.seconds["total"])


if __name__ == "__main__":
    main()
