"""Read a Penumbra SEG back with highdicom and print what the Rust tests check, as JSON.

Usage: read_seg.py SEG_PATH SOURCE_DIR
SOURCE_DIR holds the source CT slices the SEG references (files ending in .dcm).
"""

import json
import pathlib
import sys

import highdicom as hd
import numpy as np
import pydicom


def main() -> None:
    seg_path, source_dir = sys.argv[1], pathlib.Path(sys.argv[2])
    seg = hd.seg.segread(seg_path)
    sources = [pydicom.dcmread(p) for p in sorted(source_dir.glob("*.dcm"))]
    source_uids = [s.SOPInstanceUID for s in sources]

    segments = []
    for number in seg.segment_numbers:
        description = seg.get_segment_description(number)
        segments.append({
            "number": int(number),
            "label": description.segment_label,
            "category": description.segmented_property_category.value,
            "type": description.segmented_property_type.value,
            "algorithm_type": description.algorithm_type.value,
        })

    # highdicom maps frames to source instances through DerivationImageSequence.
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=source_uids,
        segment_numbers=[1, 2],
        combine_segments=False,
    )
    counts = {str(n): int(pixels[..., i].sum()) for i, n in enumerate([1, 2])}
    # Sum of the flat (z, y, x) indices of set pixels: changes if any pixel moves.
    index_sums = {str(n): int(np.flatnonzero(pixels[..., i]).sum()) for i, n in enumerate([1, 2])}
    per_slice = {str(n): [int(pixels[k, ..., i].sum()) for k in range(len(source_uids))]
                 for i, n in enumerate([1, 2])}

    frames = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        frames.append({
            "segment": int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
            "position": [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
            "source_uid": source.ReferencedSOPInstanceUID,
            "dimension_index": [int(v) for v in item.FrameContentSequence[0].DimensionIndexValues],
        })

    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    spacing = [float(v) for v in measures.PixelSpacing]
    voxel_ml = spacing[0] * spacing[1] * float(measures.SpacingBetweenSlices) / 1000.0

    volume = seg.get_volume(combine_segments=False)

    print(json.dumps({
        "segments": segments,
        "counts": counts,
        "per_slice": per_slice,
        "index_sums": index_sums,
        "frames": frames,
        "number_of_frames": int(seg.NumberOfFrames),
        "source_positions": {s.SOPInstanceUID: [float(v) for v in s.ImagePositionPatient]
                             for s in sources},
        "voxel_volume_ml": voxel_ml,
        "volume_shape": list(volume.array.shape),
        "volume_counts": [int(np.asarray(volume.array)[..., i].sum()) for i in range(2)],
        "sop_instance_uid": seg.SOPInstanceUID,
        "patient_name": str(seg.PatientName),
        "study_uid_matches": seg.StudyInstanceUID == sources[0].StudyInstanceUID,
        "frame_of_reference_matches": seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID,
    }))


if __name__ == "__main__":
    main()
