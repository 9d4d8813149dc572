"""Regenerate the stored calibration: ``python -m datasets.synth RECORDING.txt.gz ...``."""

import json
import sys

from datasets.synth.calibration import CALIBRATION_PATH, calibrate

if len(sys.argv) < 2:
    sys.exit("usage: python -m datasets.synth RECORDING.txt.gz ... (writes datasets/synth_calibration.json)")
CALIBRATION_PATH.write_text(json.dumps(calibrate(sys.argv[1:]), indent=1) + "\n")
print(f"wrote {CALIBRATION_PATH}")
