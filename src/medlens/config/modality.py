"""The modality vocabulary: the one list of names that ``--modality``, ``data.modality``, the DICOM
Modality tag, MedMNIST's metadata and the planner's augmentation rules share."""

from __future__ import annotations

import difflib
import re

from medlens.errors import ConfigError

MODALITIES: dict[str, str] = {
    "x-ray": "radiographs (DICOM CR, DX): chest, bone, dental",
    "ct": "computed tomography",
    "mri": "magnetic resonance, MR angiography included",
    "pet": "positron emission tomography",
    "nuclear-medicine": "scintigraphy, SPECT",
    "ultrasound": "ultrasound, echocardiography",
    "mammography": "breast X-ray (DICOM MG)",
    "angiography": "X-ray angiography (DICOM XA)",
    "dermoscopy": "dermatoscope images of skin lesions",
    "pathology": "stained tissue: histopathology tiles, whole-slide images",
    "microscopy": "cells and other microscope images (blood smears, electron microscopy)",
    "fundus": "retinal fundus photographs",
    "oct": "optical coherence tomography",
    "endoscopy": "endoscopy, colonoscopy, capsule frames",
    "photo": "clinical photographs",
}
# Other words for them (free text such as MedMNIST's "colon pathology" is matched word by word)
MODALITY_ALIASES: dict[str, str] = {
    "xray": "x-ray",
    "x_ray": "x-ray",
    "radiograph": "x-ray",
    "radiography": "x-ray",
    "cxr": "x-ray",
    "mr": "mri",
    "mra": "mri",
    "sonography": "ultrasound",
    "echo": "ultrasound",
    "mammogram": "mammography",
    "dermatoscope": "dermoscopy",
    "dermatoscopy": "dermoscopy",
    "isic": "dermoscopy",
    "ham10000": "dermoscopy",
    "histology": "pathology",
    "histopathology": "pathology",
    "microscope": "microscopy",
    "retina": "fundus",
    "colonoscopy": "endoscopy",
    "photograph": "photo",
}


def check_modality(word: str) -> str:
    """The vocabulary name for ``word`` (a name or an alias, any case); ConfigError with the
    closest names otherwise.

    >>> check_modality("X-Ray"), check_modality("dermatoscope")
    ('x-ray', 'dermoscopy')
    """
    key = word.strip().lower()
    if key in MODALITIES:
        return key
    if key in MODALITY_ALIASES:
        return MODALITY_ALIASES[key]
    close = difflib.get_close_matches(key, [*MODALITIES, *MODALITY_ALIASES], n=3, cutoff=0.5)
    names = sorted({MODALITY_ALIASES.get(c, c) for c in close})
    hint = f"did you mean {' or '.join(names)}? " if names else ""
    raise ConfigError(
        f"unknown modality {word!r}", hint=f"{hint}use one of {', '.join(MODALITIES)}"
    )


def modality_name(text: str | None, *, skip: tuple[str, ...] = ()) -> str:
    """The vocabulary name a free-text description or file name mentions, else "unknown".

    Words are matched one by one, so "colon pathology" is pathology and "chest_xray" x-ray;
    ``skip`` names the vocabulary entries not to guess (a folder named "pet" may hold pets).

    >>> modality_name("blood cell microscope"), modality_name("Brain_Tumor_MRI"), modality_name("")
    ('microscopy', 'mri', 'unknown')
    """
    for token in re.split(r"[^a-z0-9-]+", (text or "").lower()):
        name = token if token in MODALITIES else MODALITY_ALIASES.get(token)
        if name and name not in skip:
            return name
    return "unknown"
