"""Lab tables: CSV files with a header row and one numeric column per measured quantity.

A lab rig's slow channels (shear stress, load-point displacement, AE variance per 0.1 s)
come as such tables, e.g. ``Time,ShearStress,Var_Ch1,...``. Columns are picked by name;
an empty field (or ``nan``) is a missing value and reads as NaN. Files are parsed by
Arrow's CSV reader.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rows.csv"
    >>> _ = path.write_text("Time,ShearStress\\n0.0,3.1\\n0.1,\\n")
    >>> column(read_table(path), "ShearStress", path).tolist()
    [3.1, nan]
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as arrow_csv

from stream.core.errors import LabquakeError

# Text read as a missing value, besides an empty field.
_MISSING = ["", "nan", "NaN", "NA"]


def read_table(path: str | os.PathLike) -> pa.Table:
    """The whole table of a CSV file with a header row.

    Raises:
        LabquakeError: the file is missing, empty or not a CSV table.
    """
    path = Path(path)
    if not path.is_file():
        raise LabquakeError(f"{path}: no such file; check the path")
    try:
        table = arrow_csv.read_csv(path, convert_options=arrow_csv.ConvertOptions(
            null_values=_MISSING, strings_can_be_null=True))
    except (pa.ArrowInvalid, OSError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LabquakeError(f"{path}: not a readable CSV table ({first}); give a CSV file "
                            "with a header row") from None
    if table.num_rows == 0:
        raise LabquakeError(f"{path} has a header but no rows; is the file truncated?")
    return table


def column(table: pa.Table, name: str, path: str | os.PathLike) -> np.ndarray:
    """One column as float64 (NaN where missing).

    Raises:
        LabquakeError: no such column, or one that does not hold numbers.
    """
    if name not in table.column_names:
        shown = ", ".join(repr(found) for found in table.column_names if found) or "none"
        raise LabquakeError(f"{path} has no column {name!r} (its columns: {shown}); name "
                            "the right one with the verb's column flag")
    values = table.column(name)
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
            or pa.types.is_null(values.type)):
        raise LabquakeError(f"{path}: column {name!r} holds text, not numbers; name a "
                            "numeric column")
    return pc.fill_null(values.cast(pa.float64()), float("nan")).to_numpy()


def with_columns(table: pa.Table, columns: dict[str, np.ndarray]) -> pa.Table:
    """``table`` with float columns added (or replaced); NaN is written as an empty field."""
    for name, values in columns.items():
        array = pa.array(values, type=pa.float64(), mask=np.isnan(values))
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, array)
        else:
            table = table.append_column(name, array)
    return table


def write_table(path: str | os.PathLike, table: pa.Table) -> None:
    """Write a table as CSV, under a temporary name renamed into place when complete.

    Raises:
        LabquakeError: the folder is missing or not writable.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise LabquakeError(f"{path}: folder {path.parent} does not exist; create it first")
    temporary = path.parent / f".{path.name}.part"
    header = io.StringIO()
    # Arrow quotes every name of a header; the csv module only those that need it.
    csv.writer(header, lineterminator="\n").writerow(table.column_names)
    try:
        with temporary.open("wb") as output:
            output.write(header.getvalue().encode("utf-8"))
            arrow_csv.write_csv(table, output, arrow_csv.WriteOptions(
                include_header=False, quoting_style="needed"))
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise LabquakeError(f"{path}: cannot write ({error.strerror or error}); check the "
                            "folder's permissions and free space") from None
