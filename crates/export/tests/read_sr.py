"""Read a Penumbra measurement report back with highdicom and print its groups as JSON.

Usage: read_sr.py SR_PATH
"""

import json
import sys

import highdicom as hd


def measurements(group):
    return [
        {
            "name": m.name.meaning,
            "value": None if m.value is None else float(m.value),
            "unit": None if m.unit is None else m.unit.value,
        }
        for m in group.get_measurements()
    ]


def main() -> None:
    sr = hd.sr.srread(sys.argv[1])
    report = sr.content
    volumetric = []
    for group in report.get_volumetric_roi_measurement_groups():
        segment = group.referenced_segment
        volumetric.append({
            "tracking_identifier": group.tracking_identifier,
            "segment_numbers": [int(n) for n in segment.referenced_segment_numbers],
            "seg_sop_instance_uid": segment.referenced_sop_instance_uid,
            "source_series_uid": segment.source_series_for_segmentation.value,
            "finding": group.finding_type.value if group.finding_type is not None else None,
            "measurements": measurements(group),
        })
    other = [
        {"tracking_identifier": group.tracking_identifier, "measurements": measurements(group)}
        for group in report.get_image_measurement_groups()
    ]
    print(json.dumps({
        "template": sr.ContentTemplateSequence[0].TemplateIdentifier,
        "volumetric": volumetric,
        "other": other,
        "preliminary_flag": sr.get("PreliminaryFlag"),
    }))


if __name__ == "__main__":
    main()
