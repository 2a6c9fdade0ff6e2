"""Classification metrics with numpy only: confusion matrix, per-class precision/recall/F1, macro-F1."""
from __future__ import annotations

import numpy as np

from edgeemo.labels import LABELS


def confusion(y_true, y_pred, n: int = len(LABELS)) -> np.ndarray:
    """Rows are true labels, columns predictions."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def report(y_true, y_pred, labels=LABELS) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix, as plain JSON."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    cm = confusion(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(float)
    pred_n = cm.sum(axis=0).astype(float)
    true_n = cm.sum(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_n > 0, tp / pred_n, 0.0)
        recall = np.where(true_n > 0, tp / true_n, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = true_n > 0
    per_class = {lab: {"precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
                       "f1": round(float(f1[i]), 4), "support": int(true_n[i])}
                 for i, lab in enumerate(labels)}
    return {
        "n": int(y_true.size),
        "accuracy": round(float(tp.sum() / max(y_true.size, 1)), 4),
        "macro_f1": round(float(f1[present].mean()) if present.any() else 0.0, 4),
        "per_class": per_class,
        "labels": list(labels),
        "confusion_matrix": cm.tolist(),
    }


def summarize_folds(fold_reports: list[dict]) -> dict:
    """Mean and standard deviation of accuracy and macro-F1 over cross-validation folds."""
    acc = np.array([r["accuracy"] for r in fold_reports], dtype=float)
    f1 = np.array([r["macro_f1"] for r in fold_reports], dtype=float)
    return {"folds": len(fold_reports),
            "accuracy_mean": round(float(acc.mean()), 4), "accuracy_std": round(float(acc.std()), 4),
            "macro_f1_mean": round(float(f1.mean()), 4), "macro_f1_std": round(float(f1.std()), 4)}
