"""Fast tests on the text columns of a samples frame, whatever their storage.

A million-sample frame keeps its repeated text (metric, backend, case, run id) as
categoricals and its labels as pandas strings (Arrow-backed where pyarrow is present).
``series.astype(str) == "startup"`` would build a million Python strings first, which
costs a tenth of a second per call; these helpers compare the categorical's codes, or
let the string array compare itself, and give a NumPy boolean mask either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

Mask = npt.NDArray[np.bool_]


def equals(series: pd.Series, value: str) -> Mask:
    """Mask of rows whose text is ``value`` (missing values never match)."""
    return isin(series, (value,))


def isin(series: pd.Series, values: Iterable[str]) -> Mask:
    """Mask of rows whose text is one of ``values`` (missing values never match)."""
    wanted = [str(v) for v in values]
    if isinstance(series.dtype, pd.CategoricalDtype):
        categories = [str(c) for c in series.cat.categories]
        codes = [i for i, c in enumerate(categories) if c in wanted]
        present = series.cat.codes.to_numpy()
        if len(codes) == 1:
            return np.asarray(present == codes[0])
        if not codes:
            return np.zeros(len(series), dtype=bool)
        return np.isin(present, codes)
    if series.dtype == object:
        return np.array(series.isin(wanted).to_numpy(dtype=bool))
    return np.array(series.isin(wanted).fillna(False).to_numpy(dtype=bool))


def text(series: pd.Series) -> npt.NDArray[Any]:
    """The column as a NumPy object array of str, missing values as None."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        categories = np.array([str(c) for c in series.cat.categories] + [None], dtype=object)
        codes = series.cat.codes.to_numpy()
        return categories[np.where(codes < 0, len(categories) - 1, codes)]
    values: npt.NDArray[Any] = series.to_numpy(dtype=object, na_value=None)  # type: ignore[call-overload]
    return values


def unique_text(series: pd.Series) -> list[str]:
    """The distinct non-missing texts of a column, in order of appearance."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        categories = [str(c) for c in series.cat.categories]
        codes = pd.unique(series.cat.codes.to_numpy())
        return [categories[int(c)] for c in codes if c >= 0]
    return [str(v) for v in pd.unique(series.dropna())]
