"""Fixed vocabularies shared by producers and consumers (labels, series classes)."""
from __future__ import annotations

# The 14 keys of the labeling task: "No Finding" plus the 13 CheXpert labels, in output order.
CHEXPERT_LABELS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
LABEL_KEYS: tuple[str, ...] = ("No Finding", *CHEXPERT_LABELS)

# "Support Devices" is not a pathology: a report with only devices is still "No Finding".
PATHOLOGY_LABELS: tuple[str, ...] = tuple(k for k in CHEXPERT_LABELS if k != "Support Devices")

YES, NO = "Yes", "No"

# The seven MRI series classes of the harmonization task.
SERIES_CLASSES: tuple[str, ...] = ("T1", "T2", "T2/FLAIR", "DWI", "ADC", "SWI", "Other")
