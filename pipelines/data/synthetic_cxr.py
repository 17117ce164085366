"""Seeded synthetic chest X-ray reports in the style of the Open-i (Indiana University) collection.

Each report has COMPARISON, INDICATION, FINDINGS and IMPRESSION sections, with de-identification
tokens (XXXX) where Open-i has them, and the 14 labels of the labeling task. A report is built from
sampled finding instances (kind, side, zone, size, certainty, change since the prior study); the
same instance writes its FINDINGS sentence and its IMPRESSION line, so the text and the labels
cannot disagree.

Labeling policy (what a label means here; a real data source may differ):

- Labels describe FINDINGS and IMPRESSION only. INDICATION is the clinical question ("rule out
  pneumonia") and never sets a label; a normal report may well be asked about pneumonia.
- Uncertain mentions are Yes: "possible", "questionable", "cannot exclude", "may represent",
  "X versus Y" and "probable" all count as positive (the task has no "uncertain" answer, and
  collapsing uncertain to positive is CheXpert's U-Ones convention).
- Negated mentions are No, and a report never negates one of its own positive findings.
- Calcified granulomas (old granulomatous disease) are Lung Lesion = Yes: they are focal nodules,
  however benign. Healed, old and compression fractures are Fracture = Yes: age does not matter.
- Pulmonary vascular congestion is Edema; pleural thickening and calcified pleural plaques are
  Pleural Other; "airspace disease" and "infiltrate" are Lung Opacity.
- Tubes, lines, catheters, pacemakers, sternotomy wires and surgical clips are Support Devices,
  which never change No Finding (as `labels_from_findings` implements).
- Findings outside the 13 labels (degenerative spine, aortic atherosclerosis, hyperexpanded lungs,
  hiatal hernia, low lung volumes, osteopenia) leave No Finding = Yes.

Prevalence is tuned to an Open-i-like mix: about 40% of reports have no pathology label;
cardiomegaly, lung opacity, atelectasis, calcified granulomas, effusions and devices are the
common positives; pneumothorax, edema, consolidation and acute fractures are rare.
"""
from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipelines.data.records import ReportRecord, labels_from_findings
from pipelines.vocabulary import PATHOLOGY_LABELS

# Short names for the labels, so the phrase banks below stay readable.
EC, CARD, LES, OPA = "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity"
EDE, CON, PNA, ATE = "Edema", "Consolidation", "Pneumonia", "Atelectasis"
PTX, EFF, PLO, FX, DEV = "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"
LUNG_ALL = (OPA, CON, PNA, EDE, ATE, LES)


@dataclass(frozen=True)
class Kind:
    """One kind of positive statement: its labels and its phrase banks.

    Template markers: a leading "+" needs a prior study and says new/worse, "~" needs a prior and
    says stable; unmarked templates fit any report. Every findings template mentions every label
    of the kind; impression templates mention no label outside it.
    """

    labels: tuple[str, ...]
    region: str
    findings: tuple[str, ...]
    impressions: tuple[str, ...]
    hedged_findings: tuple[str, ...] = ()
    hedged_impressions: tuple[str, ...] = ()
    chronic: bool = False  # may sit under "No acute cardiopulmonary abnormality."
    group: str = ""  # kinds sharing a group never co-occur (one effusion statement per report)


KINDS: dict[str, Kind] = {
    "cardiomegaly": Kind(
        (CARD,), "heart",
        findings=(
            "The heart is {degreely} enlarged.", "Heart size is {degreely} enlarged.",
            "There is {degree} cardiomegaly.", "{degree} cardiomegaly.", "Cardiomegaly.",
            "Cardiomegaly is present.", "The cardiac silhouette is enlarged.",
            "{degree} enlargement of the cardiac silhouette.", "Enlarged cardiac silhouette.",
            "The cardiac silhouette is {degreely} enlarged.", "The heart is enlarged in size.",
            "~Stable {degree} cardiomegaly.", "~Cardiomegaly is unchanged.",
            "~Heart size remains enlarged.", "+Interval enlargement of the cardiac silhouette.",
        ),
        impressions=("Cardiomegaly.", "{degree} cardiomegaly.", "Enlarged heart.", "~Stable cardiomegaly.",
                     "{degree} enlargement of the cardiac silhouette."),
        hedged_findings=(
            "Borderline cardiomegaly.", "The heart size is borderline enlarged.",
            "Possible mild cardiomegaly.", "Questionable mild enlargement of the cardiac silhouette.",
            "The cardiac silhouette may be mildly enlarged, accentuated by AP technique.",
            "Probable mild cardiomegaly.",
        ),
        hedged_impressions=("Borderline cardiomegaly.", "Possible mild cardiomegaly.",
                            "Borderline enlarged heart."),
        chronic=True, group="heart",
    ),
    "enlarged_cm": Kind(
        (EC,), "mediastinum",
        findings=(
            "The mediastinum is widened.", "Widening of the superior mediastinum.",
            "The cardiomediastinal silhouette is enlarged.", "Enlarged cardiomediastinal silhouette.",
            "The mediastinal contour is widened.", "Mediastinal widening is noted.",
            "The superior mediastinum appears widened.", "Prominence of the mediastinal contours.",
            "The right paratracheal stripe is widened.", "~Stable widening of the mediastinum.",
        ),
        impressions=("Widened mediastinum.", "Enlarged cardiomediastinal silhouette.",
                     "Mediastinal widening; CT of the chest could be obtained for further evaluation.",
                     "Widening of the superior mediastinum."),
        hedged_findings=(
            "The mediastinum may be mildly widened, possibly related to AP technique.",
            "Possible mediastinal widening.", "Questionable widening of the superior mediastinum.",
            "The cardiomediastinal silhouette is possibly enlarged, which may be due to projection.",
        ),
        hedged_impressions=("Possible mediastinal widening, which may be technical.",
                            "Questionable widened mediastinum; consider repeat PA radiograph."),
        group="mediastinum",
    ),
    "opacity": Kind(
        (OPA,), "lungs",
        findings=(
            "There is patchy opacity in the {zone}.", "Patchy {zone} opacity.",
            "Hazy opacity in the {zone}.", "Focal airspace opacity is seen in the {zone}.",
            "Streaky opacity in the {zone}.", "Ill-defined opacity projecting over the {zone}.",
            "Increased opacity at the {base}.", "Airspace disease in the {zone}.",
            "There is a focal opacity in the {zone}.", "Patchy infiltrate in the {zone}.",
            "+New {zone} opacity.", "~Persistent opacity in the {zone}.",
            "~{zone} opacity is slightly improved.",
        ),
        impressions=("{zone} opacity.", "{zone} airspace opacity.", "Focal opacity in the {zone}.",
                     "Patchy {zone} opacity; follow-up radiographs recommended to document resolution.",
                     "+New {zone} opacity.", "~Persistent {zone} opacity."),
        hedged_findings=(
            "Questionable opacity in the {zone}.", "Possible subtle opacity in the {zone}.",
            "Faint opacity in the {zone}, which may be artifactual.",
            "Suggestion of a subtle {zone} opacity.",
        ),
        hedged_impressions=("Possible {zone} opacity.", "Questionable subtle {zone} opacity."),
        group="opacity",
    ),
    "opacity_mixed": Kind(
        (OPA, ATE, PNA), "lungs",
        findings=(
            "{zone} opacity may represent atelectasis or pneumonia.",
            "Patchy opacity in the {zone}, atelectasis versus pneumonia.",
            "Streaky opacity at the {base}, likely atelectasis, although early pneumonia cannot be excluded.",
            "Opacity at the {base} which could be due to atelectasis or developing pneumonia.",
            "Hazy {zone} opacity, which may reflect atelectasis or pneumonia.",
        ),
        impressions=("{zone} opacity, atelectasis versus pneumonia.",
                     "{zone} opacity which may reflect atelectasis or pneumonia.",
                     "Atelectasis or pneumonia in the {zone}."),
        group="pneumonia",
    ),
    "opacity_atelectasis": Kind(
        (OPA, ATE), "lungs",
        findings=(
            "Streaky opacities at the {base} consistent with atelectasis.",
            "{zone} opacity, most consistent with atelectasis.",
            "Linear opacity in the {zone} representing subsegmental atelectasis.",
            "Patchy {base} opacity likely reflecting atelectasis.",
            "Opacity in the {zone} compatible with atelectasis.",
        ),
        impressions=("{zone} opacity consistent with atelectasis.", "Atelectasis in the {zone}.",
                     "{zone} atelectasis."),
        group="atelectasis",
    ),
    "atelectasis": Kind(
        (ATE,), "lungs",
        findings=(
            "Subsegmental atelectasis in the {zone}.", "Linear atelectasis at the {base}.",
            "Platelike atelectasis in the {zone}.", "Discoid atelectasis at the {base}.",
            "Mild {zone} atelectasis.", "There is minimal atelectasis at the {base}.",
            "Atelectasis in the {zone}.", "{base} subsegmental atelectasis.",
            "~Stable {zone} atelectasis.", "+Increased atelectasis in the {zone}.",
        ),
        impressions=("{zone} atelectasis.", "Subsegmental atelectasis at the {base}.",
                     "Mild atelectasis in the {zone}.", "Minimal {base} atelectasis."),
        hedged_findings=(
            "{base} atelectasis or scarring.",
            "Linear density in the {zone}, likely atelectasis or scarring.",
            "Probable subsegmental atelectasis at the {base}.",
        ),
        hedged_impressions=("{base} atelectasis versus scarring.", "Probable {base} atelectasis."),
        group="atelectasis",
    ),
    "atelectasis_bibasilar": Kind(
        (ATE,), "lungs",
        findings=(
            "Bibasilar atelectasis.", "Mild bibasilar atelectasis.", "Bibasilar subsegmental atelectasis.",
            "Low lung volumes with bibasilar atelectasis.", "Atelectasis at both lung bases.",
            "Bilateral basilar linear atelectasis.", "~Stable bibasilar atelectasis.",
        ),
        impressions=("Bibasilar atelectasis.", "Low lung volumes with bibasilar atelectasis.",
                     "Mild bibasilar atelectasis."),
        hedged_findings=("Bibasilar atelectasis versus scarring.",
                         "Minimal bibasilar atelectasis or scarring."),
        hedged_impressions=("Bibasilar atelectasis or scarring.",),
        group="atelectasis",
    ),
    "consolidation": Kind(
        (CON,), "lungs",
        findings=(
            "Focal consolidation in the {zone}.", "There is airspace consolidation in the {zone}.",
            "{zone} consolidation.", "Dense consolidation involving the {zone}.",
            "Consolidation of the {zone}.", "Confluent consolidation at the {base}.",
            "+New {zone} consolidation.", "~Persistent {zone} consolidation.",
        ),
        impressions=("{zone} consolidation.", "Consolidation in the {zone}.", "+New {zone} consolidation.",
                     "~Persistent {zone} consolidation."),
        hedged_findings=("Possible early consolidation in the {zone}.",
                         "Questionable consolidation at the {base}.",
                         "Subtle consolidation may be present in the {zone}."),
        hedged_impressions=("Possible {zone} consolidation.", "Questionable early {zone} consolidation."),
        group="pneumonia",
    ),
    "consolidation_pneumonia": Kind(
        (CON, PNA), "lungs",
        findings=(
            "Consolidation in the {zone}, consistent with pneumonia.",
            "{zone} consolidation compatible with pneumonia.",
            "There is dense consolidation in the {zone} concerning for pneumonia.",
            "Airspace consolidation in the {zone} suggestive of pneumonia.",
            "+New {zone} consolidation consistent with pneumonia.",
        ),
        impressions=("{zone} pneumonia.", "{zone} consolidation consistent with pneumonia.",
                     "Pneumonia in the {zone}.", "Findings consistent with {zone} pneumonia."),
        hedged_findings=("{zone} consolidation, which may represent pneumonia.",
                         "Consolidation at the {base}; pneumonia cannot be excluded."),
        hedged_impressions=("{zone} consolidation, possibly pneumonia.", "Possible {zone} pneumonia."),
        group="pneumonia",
    ),
    "pneumonia": Kind(
        (OPA, PNA), "lungs",
        findings=(
            "Patchy airspace opacity in the {zone}, concerning for pneumonia.",
            "Airspace disease in the {zone} compatible with pneumonia.",
            "There is an opacity in the {zone} consistent with pneumonia.",
            "Ill-defined {zone} opacity suspicious for pneumonia.",
            "Focal opacity at the {base} most consistent with pneumonia.",
            "Patchy infiltrate in the {zone} consistent with pneumonia.",
            "~Persistent {zone} opacity compatible with pneumonia.",
        ),
        impressions=("{zone} pneumonia.", "Findings consistent with {zone} pneumonia.",
                     "{zone} opacity concerning for pneumonia.", "Pneumonia in the {zone}.",
                     "{zone} pneumonia. Recommend follow-up to resolution."),
        hedged_findings=(
            "Subtle {zone} opacity, which may represent early pneumonia.",
            "Hazy opacity at the {base}; early pneumonia is not excluded.",
            "{zone} opacity could reflect pneumonia in the appropriate clinical setting.",
        ),
        hedged_impressions=("Possible early {zone} pneumonia.", "{zone} opacity, cannot exclude pneumonia."),
        group="pneumonia",
    ),
    "edema": Kind(
        (EDE,), "vessels",
        findings=(
            "There is pulmonary vascular congestion.", "Mild pulmonary vascular congestion.",
            "Diffuse interstitial edema.", "Findings of {degree} interstitial pulmonary edema.",
            "Cephalization of the pulmonary vasculature with interstitial edema.",
            "Kerley B lines and perihilar haziness consistent with pulmonary edema.",
            "Increased interstitial markings consistent with {degree} edema.",
            "Vascular congestion with {degree} pulmonary edema.",
            "+Increased pulmonary vascular congestion.", "+Worsening interstitial edema.",
        ),
        impressions=("Pulmonary vascular congestion.", "{degree} pulmonary edema.",
                     "Findings consistent with {degree} interstitial edema.",
                     "Vascular congestion and interstitial edema.", "+Worsening pulmonary edema."),
        hedged_findings=("Prominent interstitial markings may represent mild interstitial edema.",
                         "Possible mild pulmonary vascular congestion.",
                         "Questionable mild interstitial edema."),
        hedged_impressions=("Possible mild pulmonary edema.", "Mild vascular congestion versus technique."),
        group="edema",
    ),
    "effusion": Kind(
        (EFF,), "pleura",
        findings=(
            "{size} {side} pleural effusion.", "There is a {size} {side} pleural effusion.",
            "{side} pleural effusion, {size} in size.",
            "Blunting of the {side} costophrenic angle consistent with a {size} effusion.",
            "{size} {side} effusion.", "Layering {side} pleural effusion.",
            "Meniscus at the {side} base compatible with a {size} pleural effusion.",
            "+Interval increase in the {side} pleural effusion.",
            "~{size} {side} pleural effusion is unchanged.",
        ),
        impressions=("{size} {side} pleural effusion.", "{side} pleural effusion.", "{size} {side} effusion.",
                     "+Enlarging {side} pleural effusion."),
        hedged_findings=(
            "Blunting of the {side} costophrenic angle may represent a small effusion.",
            "Possible trace {side} pleural effusion.", "Questionable small {side} effusion.",
            "Cannot exclude a trace {side} pleural effusion.",
        ),
        hedged_impressions=("Possible small {side} pleural effusion.",
                            "Trace {side} effusion is not excluded."),
        group="effusion",
    ),
    "effusion_bilateral": Kind(
        (EFF,), "pleura",
        findings=(
            "Bilateral pleural effusions.", "{size} bilateral pleural effusions.",
            "Bilateral pleural effusions, {side} greater than {other}.",
            "Blunting of both costophrenic angles from {size} effusions.",
            "There are {size} bilateral effusions.", "~Stable {size} bilateral pleural effusions.",
        ),
        impressions=("Bilateral pleural effusions.", "{size} bilateral pleural effusions.",
                     "{size} bilateral effusions."),
        group="effusion",
    ),
    "effusion_atelectasis": Kind(
        (EFF, ATE), "pleura",
        findings=(
            "{size} {side} pleural effusion with adjacent atelectasis.",
            "{side} pleural effusion with associated compressive atelectasis.",
            "{size} {side} effusion and adjacent basilar atelectasis.",
            "There is a {size} {side} pleural effusion with overlying atelectasis.",
        ),
        impressions=("{size} {side} pleural effusion with adjacent atelectasis.",
                     "{side} effusion and atelectasis.",
                     "{size} {side} pleural effusion and basilar atelectasis."),
        group="effusion",
    ),
    "effusion_or_thickening": Kind(
        (EFF, PLO), "pleura",
        findings=(
            "Blunting of the {side} costophrenic angle, which may represent a small effusion or "
            "pleural thickening.",
            "{side} costophrenic angle blunting, effusion versus pleural thickening.",
            "Blunting of the {side} costophrenic angle could be due to trace effusion or chronic "
            "pleural thickening.",
        ),
        impressions=("{side} costophrenic blunting, small effusion versus pleural thickening.",
                     "Possible small {side} effusion or pleural thickening."),
        group="effusion",
    ),
    "pleural_other": Kind(
        (PLO,), "pleura",
        findings=(
            "{side} apical pleural thickening.", "Pleural thickening along the {side} lateral chest wall.",
            "Calcified pleural plaques along the {side} hemidiaphragm.", "Mild {side} pleural thickening.",
            "Blunting of the {side} costophrenic angle due to chronic pleural thickening.",
            "{side} apical pleural-parenchymal thickening.", "~Stable {side} pleural thickening.",
        ),
        impressions=("{side} pleural thickening.", "Chronic {side} pleural thickening.",
                     "{side} pleural thickening, likely chronic."),
        chronic=True, group="pleural_other",
    ),
    "pneumothorax": Kind(
        (PTX,), "pleura",
        findings=(
            "{size} {side} apical pneumothorax.", "There is a {size} {side} pneumothorax.",
            "{side} pneumothorax measuring {cm} at the apex.", "A {size} {side} pneumothorax is present.",
            "{side} apical pneumothorax with visible visceral pleural line.",
            "+New {size} {side} pneumothorax.", "~{size} {side} pneumothorax is unchanged in size.",
        ),
        impressions=("{size} {side} pneumothorax.", "{side} pneumothorax.",
                     "{size} {side} apical pneumothorax.",
                     "+New {size} {side} pneumothorax."),
        hedged_findings=(
            "Possible tiny {side} apical pneumothorax.", "Cannot exclude a small {side} apical pneumothorax.",
            "Questionable {side} apical pneumothorax; a skin fold is also a consideration.",
        ),
        hedged_impressions=("Possible small {side} apical pneumothorax; repeat radiograph may be helpful.",
                            "Questionable tiny {side} pneumothorax."),
        group="pneumothorax",
    ),
    "nodule": Kind(
        (LES,), "lungs",
        findings=(
            "{mm} nodule in the {zone}.", "There is a {mm} nodular density in the {zone}.",
            "Small nodule projecting over the {zone}.", "Noncalcified {mm} nodule in the {zone}.",
            "A {mm} pulmonary nodule is present in the {zone}.", "~Stable {mm} nodule in the {zone}.",
        ),
        impressions=("{zone} pulmonary nodule. Recommend CT chest for further evaluation.",
                     "{mm} {zone} nodule.", "{zone} nodule; CT recommended.", "~Stable {zone} nodule."),
        hedged_findings=(
            "Possible {mm} nodule in the {zone}.",
            "Nodular density at the {base} may represent a nipple shadow; repeat with nipple markers.",
            "Questionable nodule in the {zone}.",
        ),
        hedged_impressions=("Possible {zone} nodule; consider CT.", "Questionable {zone} nodule."),
        group="nodule",
    ),
    "mass": Kind(
        (LES,), "lungs",
        findings=(
            "{cm} mass in the {zone}.", "There is a {cm} rounded mass in the {zone}.",
            "Lobulated {cm} mass projecting over the {zone}.", "Large mass in the {zone} measuring {cm}.",
        ),
        impressions=("{cm} {zone} mass, concerning for malignancy. Recommend CT.",
                     "{zone} mass. CT chest recommended.", "{zone} mass concerning for neoplasm."),
        group="nodule",
    ),
    "granuloma": Kind(
        (LES,), "lungs",
        findings=(
            "Calcified granuloma in the {zone}.", "There is a calcified granuloma in the {zone}.",
            "Small calcified granuloma projecting over the {zone}.", "Scattered calcified granulomas.",
            "Calcified granulomas in the {zone}.",
            "{mm} calcified nodule in the {zone}, consistent with old granulomatous disease.",
            "Sequelae of prior granulomatous disease with calcified granulomas.",
            "~Stable calcified granuloma in the {zone}.",
        ),
        impressions=("Calcified granuloma.", "{zone} calcified granuloma.", "Old granulomatous disease.",
                     "Sequelae of prior granulomatous disease."),
        chronic=True, group="granuloma",
    ),
    "fracture_acute": Kind(
        (FX,), "bones",
        findings=(
            "Acute fracture of the {bone}.", "There is an acute {bone} fracture.",
            "Minimally displaced fracture of the {bone}.", "Nondisplaced fracture of the {bone}.",
            "Displaced fracture of the {bone}.", "Fracture of the {bone}.",
        ),
        impressions=("Acute {bone} fracture.", "{bone} fracture.", "Fracture of the {bone}."),
        hedged_findings=(
            "Possible nondisplaced fracture of the {bone}.",
            "Questionable fracture of the {bone}; dedicated rib films may be helpful.",
            "Cortical irregularity of the {bone} may represent a nondisplaced fracture.",
        ),
        hedged_impressions=("Possible nondisplaced {bone} fracture.", "Questionable {bone} fracture."),
        group="fracture",
    ),
    "fracture_old": Kind(
        (FX,), "bones",
        findings=(
            "Healed fracture of the {bone}.", "Old healed {bone} fracture.", "Remote {bone} fracture.",
            "Chronic fracture deformity of the {bone}.", "Old fracture of the {bone}.",
            "~Stable healed {bone} fracture.",
        ),
        impressions=("Healed {bone} fracture.", "Old {bone} fracture.", "Remote {bone} fracture."),
        chronic=True, group="fracture",
    ),
    "compression_fracture": Kind(
        (FX,), "bones",
        findings=(
            "Mild compression fracture of the {tvert} vertebral body.",
            "Compression fracture of {tvert}, age indeterminate.",
            "Wedge compression fracture of a lower thoracic vertebral body.",
            "Moderate anterior wedge compression fracture at {tvert}.",
        ),
        impressions=("Compression fracture of {tvert}, age indeterminate.",
                     "Thoracic compression fracture.", "{tvert} compression fracture."),
        group="vertebra",
    ),
}

# Relative frequency of each kind among sampled pathology instances (about 1 instance a report).
KIND_WEIGHTS: dict[str, float] = {
    "cardiomegaly": 12, "enlarged_cm": 3.5, "opacity": 7.5, "opacity_mixed": 1.5,
    "opacity_atelectasis": 2, "atelectasis": 4.5, "atelectasis_bibasilar": 2, "consolidation": 1.8,
    "consolidation_pneumonia": 1, "pneumonia": 1.3, "edema": 2.5, "effusion": 4.5,
    "effusion_bilateral": 1.5, "effusion_atelectasis": 1, "effusion_or_thickening": 0.8,
    "pleural_other": 2.5, "pneumothorax": 1.8, "nodule": 3, "mass": 0.8, "granuloma": 7,
    "fracture_acute": 1.3, "fracture_old": 2.3, "compression_fracture": 0.8,
}

# How many pathology instances a report has; 0 makes a "No Finding" report (~42%).
FINDING_COUNT_WEIGHTS: dict[int, float] = {0: 0.42, 1: 0.35, 2: 0.15, 3: 0.06, 4: 0.02}

_COUNTS = tuple(FINDING_COUNT_WEIGHTS)
_COUNT_CUM = tuple(itertools.accumulate(FINDING_COUNT_WEIGHTS.values()))

# Clinical patterns that co-occur more often than chance (CHF, trauma, infection ...).
PATTERNS: tuple[tuple[str, ...], ...] = (
    ("cardiomegaly", "edema", "effusion_bilateral"),
    ("cardiomegaly", "edema"),
    ("pneumonia", "effusion"),
    ("cardiomegaly", "effusion_atelectasis"),
    ("granuloma", "fracture_old"),
    ("cardiomegaly", "atelectasis_bibasilar"),
    ("pneumothorax", "fracture_acute"),
    ("mass", "effusion"),
)
PATTERN_RATE = 0.2  # share of multi-finding reports drawn from a pattern

DEVICES: dict[str, Kind] = {
    "ett": Kind(
        (DEV,), "devices",
        findings=("Endotracheal tube tip {tube_cm} cm above the carina.",
                  "The endotracheal tube terminates {tube_cm} cm above the carina.",
                  "ET tube in satisfactory position.", "Endotracheal tube in standard position."),
        impressions=("Endotracheal tube in appropriate position.",
                     "ET tube tip {tube_cm} cm above the carina."),
    ),
    "ngt": Kind(
        (DEV,), "devices",
        findings=("Nasogastric tube courses below the diaphragm.", "Enteric tube with tip in the stomach.",
                  "NG tube tip projects over the gastric fundus.",
                  "An orogastric tube extends into the stomach."),
        impressions=("Enteric tube in the stomach.", "NG tube in satisfactory position."),
    ),
    "cvc": Kind(
        (DEV,), "devices",
        findings=("{side} internal jugular central venous catheter with tip in the SVC.",
                  "{side} subclavian central line tip at the cavoatrial junction.",
                  "{side} PICC line tip in the distal SVC.", "{side} IJ catheter terminates in the SVC."),
        impressions=("{side} central venous catheter tip in the SVC.",
                     "Central line in satisfactory position."),
    ),
    "port": Kind(
        (DEV,), "devices",
        findings=("{side} chest port catheter with tip in the SVC.",
                  "{side}-sided Port-A-Cath with tip at the cavoatrial junction."),
        impressions=("Port catheter in place.",),
    ),
    "pacer": Kind(
        (DEV,), "devices",
        findings=("{side}-sided pacemaker with leads in the right atrium and right ventricle.",
                  "Dual-chamber pacemaker with leads in expected position.",
                  "{side} chest wall pacemaker generator with intact leads.",
                  "Single lead {side} pectoral pacemaker.",
                  "AICD with lead terminating in the right ventricle."),
        impressions=("Pacemaker in place.", "Cardiac pacemaker with leads in standard position."),
    ),
    "sternotomy": Kind(
        (DEV,), "devices",
        findings=("Median sternotomy wires.", "Postoperative changes of median sternotomy with intact wires.",
                  "Sternotomy wires are intact.", "Status post CABG with intact sternotomy wires.",
                  "XXXX sternotomy wires are present.",
                  "Intact median sternotomy wires and mediastinal clips."),
        impressions=("Postoperative changes of median sternotomy.", "Status post median sternotomy."),
    ),
    "clips": Kind(
        (DEV,), "devices",
        findings=("Surgical clips in the right upper quadrant.", "Cholecystectomy clips are noted.",
                  "Surgical clips in the {side} axilla."),
        impressions=(),
    ),
    "chest_tube": Kind(
        (DEV,), "devices",
        findings=("{side} chest tube with tip at the apex.", "{side}-sided chest tube in place."),
        impressions=("{side} chest tube in place.",),
    ),
}
DEVICE_WEIGHTS: dict[str, float] = {
    "sternotomy": 3.0, "pacer": 2.5, "cvc": 1.2, "port": 0.8, "ett": 0.6, "ngt": 0.6, "clips": 0.8,
    "chest_tube": 0.4,
}
DEVICE_RATE = {False: 0.05, True: 0.12}  # by whether the report has pathology (sicker patients)
# Devices whose position the impression nearly always reports (a misplaced tube is urgent).
ACUTE_CARE_DEVICES: tuple[str, ...] = ("ett", "cvc", "chest_tube")


@dataclass(frozen=True)
class Incidental:
    """A finding outside the 13 labels: it never changes any label."""

    region: str
    findings: tuple[str, ...]
    impressions: tuple[str, ...]
    rate: float


INCIDENTALS: dict[str, Incidental] = {
    "spine": Incidental("bones", (
        "Degenerative changes of the thoracic spine.", "Mild degenerative changes in the thoracic spine.",
        "Thoracic spondylosis.", "Mild dextroscoliosis of the thoracic spine.",
        "Degenerative disc disease of the thoracic spine.",
        "Multilevel degenerative endplate changes in the thoracic spine.",
    ), ("Degenerative changes of the thoracic spine.",), 0.16),
    "aorta": Incidental("mediastinum", (
        "Atherosclerotic calcification of the aortic arch.", "The thoracic aorta is tortuous.",
        "Aortic atherosclerosis.", "Calcified aortic knob.", "Tortuous and calcified thoracic aorta.",
    ), ("Aortic atherosclerosis.",), 0.09),
    "copd": Incidental("lungs", (
        "The lungs are hyperexpanded.", "Hyperinflated lungs with flattening of the hemidiaphragms.",
        "Emphysematous changes.", "Hyperexpanded lungs consistent with COPD.",
    ), ("Hyperexpanded lungs consistent with COPD.", "Emphysema.",
        "Chronic obstructive pulmonary disease."), 0.07),
    "hernia": Incidental("mediastinum", (
        "Small hiatal hernia.", "Retrocardiac air-fluid level consistent with a hiatal hernia.",
    ), ("Hiatal hernia.",), 0.025),
    "osteopenia": Incidental("bones", ("The bones are osteopenic.", "Diffuse osteopenia."), (), 0.03),
    "low_volumes": Incidental("lungs", (
        "Low lung volumes.", "Lung volumes are low, accentuating the bronchovascular markings.",
    ), (), 0.06),
    "hilar_nodes": Incidental("mediastinum", ("Calcified hilar lymph nodes.",), (), 0.02),
}


@dataclass(frozen=True)
class Normal:
    """A normal statement: the regions it covers and the labels it asserts absent."""

    text: str
    regions: tuple[str, ...]
    negates: frozenset[str]


def _normals(regions: str, negates: Sequence[str], *texts: str) -> tuple[Normal, ...]:
    return tuple(Normal(t, tuple(regions.split()), frozenset(negates)) for t in texts)


# "^" marks statements that need a prior study. "No interval change" negates every pathology
# because it would contradict a new finding (and is only used for otherwise normal reports).
NORMALS: tuple[Normal, ...] = (
    *_normals("heart", (CARD,),
              "The heart is normal in size.", "Heart size is normal.", "Normal heart size.",
              "The heart size is within normal limits.", "Heart size within normal limits.",
              "The cardiac silhouette is normal in size.", "The heart is not enlarged.", "No cardiomegaly."),
    *_normals("heart mediastinum", (CARD, EC),
              "The cardiomediastinal silhouette is within normal limits.",
              "Normal cardiomediastinal silhouette.",
              "The cardiomediastinal silhouette is normal in size and contour.",
              "Heart and mediastinum are within normal limits.",
              "Cardiomediastinal contours are unremarkable.",
              "The heart and mediastinum are normal.", "Heart size and mediastinal contours are normal.",
              "The cardiac and mediastinal contours are within normal limits.",
              "The heart size and mediastinal contours appear within normal limits.",
              "The cardiomediastinal silhouette and pulmonary hila are within normal limits for size.",
              "Stable cardiomediastinal silhouette within normal limits for size and contour."),
    *_normals("mediastinum", (EC,),
              "Mediastinal contours are normal.", "The mediastinum is not widened.",
              "Normal mediastinal contour.",
              "The mediastinal silhouette is unremarkable.", "The trachea is midline."),
    *_normals("vessels", (EDE,),
              "Pulmonary vascularity is normal.", "Normal pulmonary vasculature.", "No pulmonary edema.",
              "No vascular congestion.", "The pulmonary vasculature is within normal limits.",
              "No evidence of pulmonary edema.", "No typical findings of pulmonary edema.",
              "Pulmonary vascularity is within normal limits without evidence of vascular congestion."),
    *_normals("heart vessels", (CARD, EDE),
              "Heart size and pulmonary vascularity are within normal limits.",
              "Normal heart size and pulmonary vascularity.",
              "The heart is normal in size and the pulmonary vasculature is unremarkable."),
    *_normals("lungs", LUNG_ALL,
              "The lungs are clear.", "Lungs are clear.", "Clear lungs.", "The lungs are clear bilaterally.",
              "Both lungs are clear.", "Lungs are clear without infiltrate.",
              "The lungs are free of focal airspace disease.", "Lungs are grossly clear.",
              "The lungs are clear bilaterally with no focal airspace disease.",
              "The lungs are well aerated and clear."),
    *_normals("lungs", (OPA, CON, PNA),
              "No focal airspace disease.", "No focal airspace opacity.",
              "There is no focal airspace consolidation.", "No airspace disease."),
    *_normals("lungs", (CON, PNA),
              "No focal consolidation.", "No focal alveolar consolidation.", "No consolidation.",
              "There is no focal consolidation."),
    *_normals("lungs", (PNA,), "No evidence of pneumonia."),
    *_normals("lungs", (LES,),
              "No suspicious pulmonary nodules or masses.", "No pulmonary nodules.",
              "No focal mass or nodule is identified."),
    *_normals("lungs pleura", (CON, PNA, PTX, EFF),
              "No focal consolidation, pneumothorax, or pleural effusion.",
              "There is no focal consolidation, pleural effusion or pneumothorax."),
    *_normals("lungs pleura", (OPA, CON, PNA, PTX, EFF),
              "No pneumothorax, pleural effusion, or focal airspace disease."),
    *_normals("lungs pleura", (*LUNG_ALL, PTX, EFF),
              "Lungs are clear without focal consolidation, pneumothorax, or pleural effusion.",
              "The lungs are clear, without evidence of pneumothorax or pleural effusion.",
              "The lungs are clear bilaterally. Specifically, no evidence of focal consolidation, "
              "pneumothorax, or pleural effusion.",
              "Both lungs are clear and expanded, with no focal airspace disease, effusion or pneumothorax."),
    *_normals("pleura", (PTX, EFF),
              "No pneumothorax or pleural effusion.", "No pleural effusion or pneumothorax.",
              "There is no pleural effusion or pneumothorax.", "No effusion or pneumothorax.",
              "No pleural effusions or pneumothoraces."),
    *_normals("pleura", (EFF, PLO), "The costophrenic angles are sharp.", "Costophrenic angles are clear."),
    *_normals("pleura", (EFF,), "No pleural effusion.", "No pleural effusions."),
    *_normals("pleura", (PTX,), "No pneumothorax.", "There is no pneumothorax.",
              "No evidence of pneumothorax."),
    *_normals("bones", (FX,),
              "No acute bony abnormality.", "No acute osseous abnormality.",
              "The osseous structures are intact.",
              "Visualized osseous structures are unremarkable.", "No displaced rib fractures.",
              "Bony structures are intact.", "No acute fracture.",
              "No acute osseous abnormality of the visualized thoracic skeleton.",
              "The visualized bony structures of the thorax are intact without acute fracture."),
    *_normals("soft", (), "The visualized soft tissues are unremarkable.", "Soft tissues are normal.",
              "The visualized upper abdomen is unremarkable.", "No free air under the diaphragm."),
    *_normals("prior", (EFF,), "^Interval resolution of the previously seen {side} pleural effusion."),
    *_normals("prior", (OPA, CON, PNA), "^Resolution of the previously noted {zone} airspace disease."),
    *_normals("prior", (PTX,), "^Interval resolution of the {side} pneumothorax."),
    *_normals("prior", PATHOLOGY_LABELS, "^No interval change.",
              "^Stable appearance of the chest since XXXX."),
)

NORMALS_BY_REGION: dict[str, tuple[Normal, ...]] = {
    region: tuple(n for n in NORMALS if n.regions[0] == region) for region in dict.fromkeys(
        n.regions[0] for n in NORMALS)
}

# How often each region gets a normal statement when nothing positive sits there.
NORMAL_REGION_RATES: dict[str, float] = {
    "heart": 0.95, "mediastinum": 0.6, "vessels": 0.5, "lungs": 0.97, "pleura": 0.9,
    "bones": 0.75, "soft": 0.15, "prior": 0.3,
}
REGION_ORDER: dict[str, int] = {
    "prior": 0, "devices": 1, "heart": 2, "mediastinum": 3, "vessels": 4, "lungs": 5, "pleura": 6,
    "bones": 7, "soft": 8,
}

# Negations a positive sentence may carry: "Small left pleural effusion, without pneumothorax."
WITHOUT_CLAUSES: tuple[tuple[str, frozenset[str]], ...] = (
    ("pneumothorax", frozenset({PTX})), ("pleural effusion", frozenset({EFF})),
    ("focal consolidation", frozenset({CON, PNA})), ("pulmonary edema", frozenset({EDE})),
)
IMPRESSION_NEGATIONS: tuple[tuple[str, frozenset[str]], ...] = (
    ("No pneumothorax.", frozenset({PTX})), ("No pleural effusion.", frozenset({EFF})),
    ("No focal consolidation.", frozenset({CON, PNA})), ("No pulmonary edema.", frozenset({EDE})),
)

NORMAL_IMPRESSIONS: tuple[str, ...] = (
    "No acute cardiopulmonary abnormality.", "No active disease.", "No acute cardiopulmonary disease.",
    "No acute cardiopulmonary process.", "Negative chest x-XXXX.", "No acute pulmonary disease.",
    "Normal chest.", "No acute disease.", "Normal chest radiograph.", "No acute cardiopulmonary findings.",
    "No acute cardiopulmonary abnormality identified.", "Negative for acute cardiopulmonary disease.",
)

PRIOR_COMPARISONS: tuple[str, ...] = (
    "XXXX, XXXX", "XXXX", "Chest radiograph dated XXXX.", "Chest radiographs XXXX.",
    "PA and lateral chest radiographs XXXX.", "Chest x-XXXX XXXX.", "XXXX PA and lateral chest.",
    "Prior chest CT XXXX.", "Two views of the chest XXXX.", "XXXX, XXXX, XXXX",
)
NO_COMPARISONS: tuple[str, ...] = ("None.", "None", "None available.", "No prior studies.")

GENERAL_COMPLAINTS: tuple[str, ...] = (
    "chest pain", "shortness of breath", "cough", "preop", "preoperative evaluation", "positive PPD",
    "routine screening", "dyspnea", "fever", "hypertension", "back pain", "weakness", "syncope",
    "follow-up", "tuberculosis screening", "chest pain and shortness of breath", "abdominal pain",
    "dizziness", "history of smoking", "palpitations", "annual physical", "fatigue", "wheezing",
    "rule out pneumonia", "hemoptysis", "asthma", "diabetes, preop", "nausea and vomiting",
    "evaluate for infiltrate", "cough for XXXX weeks",
)
# Reasons for the exam (not symptoms): they do not read after "...-year-old male with".
EXAM_REASONS: frozenset[str] = frozenset({
    "preop", "preoperative evaluation", "routine screening", "follow-up", "tuberculosis screening",
    "annual physical", "rule out pneumonia", "diabetes, preop", "evaluate for infiltrate",
    "pleural effusion follow-up", "chest pain, rule out pneumothorax", "status post biopsy",
    "lung nodule follow-up",
})
# Indications that fit a kind of finding; general ones are used otherwise.
LINKED_COMPLAINTS: dict[str, tuple[str, ...]] = {
    "pneumonia": ("cough and fever", "rule out pneumonia", "productive cough", "fever and chills"),
    "consolidation_pneumonia": ("cough and fever", "rule out pneumonia", "pneumonia"),
    "opacity_mixed": ("cough", "fever", "shortness of breath"),
    "effusion": ("shortness of breath", "dyspnea", "CHF", "pleural effusion follow-up"),
    "effusion_bilateral": ("CHF", "dyspnea and leg swelling", "shortness of breath"),
    "edema": ("CHF", "dyspnea and leg swelling", "shortness of breath", "orthopnea"),
    "cardiomegaly": ("shortness of breath", "CHF", "edema", "hypertension"),
    "fracture_acute": ("fall", "rib pain after fall", "MVC", "chest wall pain after trauma"),
    "pneumothorax": ("chest pain, rule out pneumothorax", "status post biopsy", "sudden shortness of breath"),
    "nodule": ("lung nodule follow-up", "history of smoking", "weight loss"),
    "mass": ("weight loss, smoker", "history of lung cancer", "hemoptysis"),
}
INDICATION_FORMS: tuple[tuple[str, float], ...] = (
    ("XXXX-year-old {sex} with {c}.", 0.3), ("XXXX-year-old {sex}, {c}.", 0.08), ("{c}", 0.25),
    ("{c}.", 0.22), ("{c}. XXXX", 0.05), ("{Sex}, {c}.", 0.05), ("", 0.05),
)
REASON_FORMS: tuple[tuple[str, float], ...] = (
    ("XXXX-year-old {sex}, {c}.", 0.35), ("{c}", 0.3), ("{c}.", 0.3), ("", 0.05),
)

ZONES: dict[str, tuple[str, ...]] = {
    "right": (
        "right upper lobe", "right middle lobe", "right lower lobe", "right midlung", "right lung base",
    ),
    "left": ("left upper lobe", "left lower lobe", "left midlung", "left lung base"),
}
BASES: dict[str, tuple[str, ...]] = {
    "right": ("right base", "right lung base", "right lower lobe"),
    "left": ("left base", "left lung base", "left lower lobe"),
}
SIZES: tuple[tuple[str, float], ...] = (("small", 0.6), ("moderate", 0.28), ("large", 0.12))
DEGREES: tuple[tuple[str, float], ...] = (("mild", 0.6), ("moderate", 0.3), ("marked", 0.1))
ORDINALS: tuple[str, ...] = ("3rd", "4th", "5th", "6th", "7th", "8th", "9th", "10th")
BONE_FORMS: tuple[str, ...] = (
    "{side} {rib} rib", "{side} posterior {rib} rib", "{side} lateral {rib} rib", "{side} anterior {rib} rib",
    "{side} clavicle",
)
HEDGE_RATE = 0.15  # share of instances worded with uncertainty, when the kind has hedged phrasings


@dataclass(frozen=True)
class Instance:
    """One positive statement of a report: its kind, slot values, certainty and change since the prior."""

    name: str
    kind: Kind
    slots: Slots
    hedged: bool
    change: str  # "" (no comparison wording), "+" (new/worse) or "~" (stable)


def generate_reports(n: int, seed: int = 0) -> list[ReportRecord]:
    """`n` synthetic chest X-ray reports with coherent labels; the same (n, seed) gives the same list.

    Ids run cxr-00001, cxr-00002, ...; see the module docstring for the labeling policy.
    """
    if n < 0:
        raise ValueError(f"number of reports must be >= 0, got {n}")
    rng = random.Random(seed)
    return [_make_report(rng, f"cxr-{i:05d}") for i in range(1, n + 1)]


def _make_report(rng: random.Random, report_id: str) -> ReportRecord:
    comparison = _comparison(rng)
    has_prior = comparison not in ("", *NO_COMPARISONS)
    findings = _draw_findings(rng, has_prior)
    devices = _draw_devices(rng, sick=bool(findings))
    incidentals = [name for name, inc in INCIDENTALS.items() if rng.random() < inc.rate]
    positive = {label for inst in (*findings, *devices) for label in inst.kind.labels}
    return ReportRecord(
        id=report_id,
        comparison=comparison,
        indication=_indication(rng, findings),
        findings=_findings_text(rng, findings, devices, incidentals, positive, has_prior),
        impression=_impression_text(rng, findings, devices, incidentals, positive),
        labels=labels_from_findings(positive),
    )


def _weighted(rng: random.Random, pairs: Sequence[tuple[str, float]]) -> str:
    names, cum_weights = _cumulative(tuple(pairs))
    return rng.choices(names, cum_weights=cum_weights)[0]


@functools.lru_cache(maxsize=256)
def _cumulative(pairs: tuple[tuple[str, float], ...]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Choices and cumulative weights of a (choice, weight) bank, computed once per bank."""
    return tuple(p[0] for p in pairs), tuple(itertools.accumulate(p[1] for p in pairs))


def _comparison(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.06:
        return ""
    return rng.choice(NO_COMPARISONS) if roll < 0.55 else rng.choice(PRIOR_COMPARISONS)


def _indication(rng: random.Random, findings: list[Instance]) -> str:
    linked = [LINKED_COMPLAINTS[f.name] for f in findings if f.name in LINKED_COMPLAINTS]
    bank = rng.choice(linked) if linked and rng.random() < 0.5 else GENERAL_COMPLAINTS
    complaint = rng.choice(bank)
    forms = REASON_FORMS if complaint in EXAM_REASONS else INDICATION_FORMS
    sex = rng.choice(("male", "female"))
    text = _weighted(rng, forms).format(c=complaint, sex=sex, Sex=sex.capitalize())
    return _sentence_case(text)


class Slots(dict):
    """Placeholder values, each drawn on first use and then kept.

    One instance's templates share a Slots, so its FINDINGS sentence and IMPRESSION line name the
    same side, zone and size; "zone" and "base" alias each other so the two sections never place
    one finding in two lobes.
    """

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    def __missing__(self, key: str) -> str:
        value = _SLOT_DRAWS[key](self, self.rng)
        self[key] = value
        return value


_SLOT_DRAWS: dict[str, Callable[[Slots, random.Random], str]] = {
    "side": lambda s, r: r.choice(("right", "left")),
    "other": lambda s, r: "left" if s["side"] == "right" else "right",
    "zone": lambda s, r: s["base"] if "base" in s else r.choice(ZONES[s["side"]]),
    "base": lambda s, r: s["zone"] if "zone" in s else r.choice(BASES[s["side"]]),
    "size": lambda s, r: _weighted(r, SIZES),
    "degree": lambda s, r: _weighted(r, DEGREES),
    "degreely": lambda s, r: {"mild": "mildly", "moderate": "moderately", "marked": "markedly"}[s["degree"]],
    "mm": lambda s, r: f"{r.randint(4, 14)} mm",
    "cm": lambda s, r: f"{r.randint(15, 48) / 10:.1f} cm",
    "bone": lambda s, r: r.choice(BONE_FORMS).format(side=s["side"], rib=r.choice(ORDINALS)),
    "tvert": lambda s, r: f"T{r.randint(6, 12)}",
    "tube_cm": lambda s, r: str(r.randint(2, 7)),
}


def _draw_findings(rng: random.Random, has_prior: bool) -> list[Instance]:
    count = rng.choices(_COUNTS, cum_weights=_COUNT_CUM)[0]
    if count >= 2 and rng.random() < PATTERN_RATE:
        names = list(rng.choice(PATTERNS))
    else:
        names = _sample_kinds(rng, count)
    return [_instance(rng, name, KINDS[name], has_prior) for name in names]


def _sample_kinds(rng: random.Random, count: int) -> list[str]:
    """Weighted draw without replacement, at most one kind per group."""
    chosen: list[str] = []
    for _ in range(count):
        options, cum_weights = _kind_options(frozenset(KINDS[c].group for c in chosen))
        chosen.append(rng.choices(options, cum_weights=cum_weights)[0])
    return chosen


@functools.lru_cache(maxsize=1024)
def _kind_options(used_groups: frozenset[str]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    options = tuple(k for k in KIND_WEIGHTS if KINDS[k].group not in used_groups)
    return options, tuple(itertools.accumulate(KIND_WEIGHTS[k] for k in options))


def _instance(rng: random.Random, name: str, kind: Kind, has_prior: bool) -> Instance:
    hedged = bool(kind.hedged_findings) and rng.random() < HEDGE_RATE
    change = ""
    if has_prior and not hedged:
        # Chronic findings are usually called stable; acute ones new.
        roll = rng.random()
        if kind.chronic:
            change = "~" if roll < 0.5 else ""
        else:
            change = "+" if roll < 0.3 else "~" if roll < 0.45 else ""
    return Instance(name, kind, Slots(rng), hedged, change)


def _draw_devices(rng: random.Random, sick: bool) -> list[Instance]:
    if rng.random() >= DEVICE_RATE[sick]:
        return []
    names = list(DEVICE_WEIGHTS)
    first = rng.choices(names, weights=list(DEVICE_WEIGHTS.values()))[0]
    chosen = [first]
    if first == "ett":  # intubated patients nearly always have an enteric tube and often a line
        chosen += [d for d in ("ngt", "cvc") if rng.random() < 0.7]
    elif rng.random() < 0.2:
        second = rng.choices(names, weights=list(DEVICE_WEIGHTS.values()))[0]
        chosen += [second] if second != first else []
    return [Instance(d, DEVICES[d], Slots(rng), False, "") for d in chosen]


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


def _render(rng: random.Random, bank: Sequence[str], inst: Instance) -> str:
    """Pick a template whose change marker fits the instance and fill its slots."""
    options = [t for t in bank if t[0] not in "+~" or t[0] == inst.change]
    marked = [t for t in options if t[0] == inst.change] if inst.change else []
    # With a prior, say "stable"/"new" most of the time rather than leaving change unstated.
    template = rng.choice(marked if marked and rng.random() < 0.6 else options)
    return _sentence_case(template.lstrip("+~").format_map(inst.slots))


def _finding_sentence(rng: random.Random, inst: Instance, positive: set[str], negated: set[str]) -> str:
    bank = inst.kind.hedged_findings if inst.hedged else inst.kind.findings
    sentence = _render(rng, bank, inst)
    if inst.hedged or inst.kind.region not in ("lungs", "pleura") or rng.random() >= 0.15:
        return sentence
    clauses = [(t, labs) for t, labs in WITHOUT_CLAUSES if not labs & (positive | negated)]
    if not clauses:
        return sentence
    picked = rng.sample(clauses, k=min(len(clauses), rng.choice((1, 1, 2))))
    negated.update(label for _, labs in picked for label in labs)
    return f"{sentence[:-1]}, without {' or '.join(t for t, _ in picked)}."


def _findings_text(
    rng: random.Random, findings: list[Instance], devices: list[Instance], incidentals: list[str],
    positive: set[str], has_prior: bool,
) -> str:
    negated: set[str] = set()  # labels already said to be absent, so no negation repeats
    items: list[tuple[int, bool, str]] = []  # (region order, positive?, sentence)
    for inst in findings:
        items.append((REGION_ORDER[inst.kind.region], True, _finding_sentence(rng, inst, positive, negated)))
    devices_first = rng.random() < 0.5
    for inst in devices:
        order = REGION_ORDER["devices"] if devices_first else 99
        items.append((order, True, _render(rng, inst.kind.findings, inst)))
    for name in incidentals:
        inc = INCIDENTALS[name]
        items.append((REGION_ORDER[inc.region], False, rng.choice(inc.findings)))
    occupied = {inst.kind.region for inst in findings}
    items += _normal_items(rng, occupied, positive, negated, has_prior)
    return " ".join(text for _, _, text in _order(rng, items))


def _normal_items(
    rng: random.Random, occupied: set[str], positive: set[str], negated: set[str], has_prior: bool
) -> list[tuple[int, bool, str]]:
    """Normal statements for the regions, never negating a positive label or repeating a negation."""
    covered: set[str] = set()
    items = []
    for region, rate in NORMAL_REGION_RATES.items():
        if region in covered:
            continue
        # A region holding a positive finding still gets a compatible negation now and then
        # ("Bibasilar atelectasis. No focal consolidation.").
        if rng.random() >= (rate * 0.5 if region in occupied else rate):
            continue
        options = _eligible_normals(region, frozenset(positive | negated), has_prior)
        if not options:
            continue
        statement = rng.choice(options)
        covered.update(statement.regions)
        negated.update(statement.negates)
        text = statement.text.lstrip("^")
        text = text.format_map(Slots(rng)) if "{" in text else text
        items.append((REGION_ORDER[region], False, _sentence_case(text)))
    return items


@functools.lru_cache(maxsize=4096)
def _eligible_normals(region: str, said: frozenset[str], has_prior: bool) -> tuple[Normal, ...]:
    """Normal statements of `region` that negate nothing already positive or already negated."""
    return tuple(
        s for s in NORMALS_BY_REGION[region]
        if not s.negates & said and (has_prior or not s.text.startswith("^"))
    )


def _order(rng: random.Random, items: list[tuple[int, bool, str]]) -> list[tuple[int, bool, str]]:
    """Mostly anatomical order (as radiologists dictate), sometimes positives first, sometimes loose."""
    roll = rng.random()
    if roll < 0.65:
        return sorted(items, key=lambda it: it[0])
    if roll < 0.88:
        return sorted(items, key=lambda it: (not it[1], it[0]))
    shuffled = items[:]
    rng.shuffle(shuffled)
    return shuffled


def _impression_text(
    rng: random.Random, findings: list[Instance], devices: list[Instance], incidentals: list[str],
    positive: set[str],
) -> str:
    acute = [f for f in findings if not f.kind.chronic]
    chronic = [f for f in findings if f.kind.chronic]
    lines = [_impression_line(rng, f) for f in acute]
    # Radiologists often leave old granulomas and healed fractures out of the impression.
    lines += [_impression_line(rng, f) for f in chronic if rng.random() < 0.75]
    if not acute and (not lines or rng.random() < 0.6):
        lines.insert(0, rng.choice(NORMAL_IMPRESSIONS))
    if acute and rng.random() < 0.12:
        negations = [t for t, labs in IMPRESSION_NEGATIONS if not labs & positive]
        lines += [rng.choice(negations)] if negations else []
    if acute and positive & {PTX} and rng.random() < 0.3:
        lines.append("Findings discussed with Dr. XXXX at XXXX on XXXX.")
    for inst in devices:
        mention_rate = 0.85 if inst.name in ACUTE_CARE_DEVICES else 0.35
        if inst.kind.impressions and rng.random() < mention_rate:
            lines.append(_render(rng, inst.kind.impressions, inst))
    lines += [rng.choice(INCIDENTALS[n].impressions) for n in incidentals
              if INCIDENTALS[n].impressions and rng.random() < 0.2]
    if len(lines) >= 2 and rng.random() < 0.45:
        return " ".join(f"{i}. {line}" for i, line in enumerate(lines, 1))
    return " ".join(lines)


def _impression_line(rng: random.Random, inst: Instance) -> str:
    bank = inst.kind.hedged_impressions if inst.hedged else inst.kind.impressions
    return _render(rng, bank, inst)

