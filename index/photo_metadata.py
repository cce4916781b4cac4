"""A Flickr photo metadata file joined into a build by photo id (``flickr_metadata.csv``).

MegaFace ships its photos' Flickr metadata beside them; ``../shared/data/megaface_sample`` has
the same kind of file: ``photo_id, nsid, licence, date_taken`` (``url`` is read too when there is
such a column; ``license`` is taken for ``licence``). A build uses the one given with
``--photo-metadata FILE``, else a ``flickr_metadata.csv`` in the dataset's root, and fills in each
photo's missing NSID, licence, date and URL from the row of its photo id (index/build.py); what
the layout or a CSV manifest gives a photo is kept.

At MegaFace's size (4.2M rows) the file is not held in Python: it is streamed into an SQLite
table in the build's staging folder, indexed on photo_id after the import, and each photo is one
indexed lookup as the scan streams by. Rows with the same photo id: the first one counts.
"""

from __future__ import annotations

import csv
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

FILENAME = "flickr_metadata.csv"  # used without asking when it sits in the dataset's root
TABLE_FILE = "photo_metadata.sqlite"  # in the staging folder, deleted before the index is published
COLUMNS = ("photo_id", "nsid", "licence", "date_taken", "url")
_ALIASES = {"license": "licence"}


class MetadataRow(NamedTuple):
    nsid: str
    licence: str
    date_taken: str
    url: str


@dataclass
class JoinStats:
    """What the join did, for the build report."""

    file: str
    rows: int = 0  # rows of the file with a photo id
    rows_without_photo_id: int = 0
    duplicate_photo_ids: int = 0  # later rows with an earlier row's photo id (ignored)
    photos_matched: int = 0  # scanned photos whose photo id has a row
    photos_without_row: int = 0  # scanned photos with a photo id the file doesn't have
    photos_without_photo_id: int = 0  # scanned photos that name no photo id: nothing to join on
    nsid_disagreements: int = 0  # rows whose NSID differs from the photo's (the photo's is kept)

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        text = (
            f"photo metadata from {self.file}: {self.photos_matched:,} photos matched one of its "
            f"{self.rows:,} rows, {self.photos_without_row + self.photos_without_photo_id:,} had none"
        )
        if self.photos_without_photo_id:
            text += f" ({self.photos_without_photo_id:,} without a photo id)"
        if self.nsid_disagreements:
            text += f"; {self.nsid_disagreements:,} rows name another account than the photo's folder (folder kept)"
        return text


class PhotoMetadata:
    """``csv_path`` imported into a new SQLite table at ``db_path``; :meth:`match` looks a photo up.

    ValueError naming the file (and the line) when it can't be read as such a CSV; the build
    has then not started describing anything.
    """

    def __init__(self, csv_path: Path, db_path: Path):
        self.csv_path = Path(csv_path)
        self.db_path = Path(db_path)
        self.stats = JoinStats(str(self.csv_path))
        self.db_path.unlink(missing_ok=True)
        self._con = sqlite3.connect(self.db_path, check_same_thread=False)
        try:
            self._import()
        except BaseException:
            self.close()
            raise

    def _import(self) -> None:
        con = self._con
        con.execute("PRAGMA journal_mode = OFF")  # a scratch file of the staging folder
        con.execute("PRAGMA synchronous = OFF")
        con.execute(
            "CREATE TABLE photos (photo_id TEXT NOT NULL, nsid TEXT NOT NULL, licence TEXT NOT NULL,"
            " date_taken TEXT NOT NULL, url TEXT NOT NULL)"
        )
        where = self.csv_path
        try:
            with open(where, newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header is None:
                    raise ValueError(f"{where}: empty file, expected a header with {', '.join(COLUMNS[:4])}")
                names = [_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
                if "photo_id" not in names:
                    raise ValueError(
                        f"{where}: a photo metadata file needs a photo_id column (and nsid, licence, "
                        f"date_taken, url as it has them); its columns are {', '.join(header) or 'none'}"
                    )
                at = [names.index(c) if c in names else -1 for c in COLUMNS]

                def rows():
                    for fields in reader:
                        values = tuple(fields[i].strip() if 0 <= i < len(fields) else "" for i in at)
                        if values[0]:
                            self.stats.rows += 1
                            yield values
                        elif any(fields):
                            self.stats.rows_without_photo_id += 1

                with con:
                    con.executemany("INSERT INTO photos VALUES (?, ?, ?, ?, ?)", rows())
        except csv.Error as e:
            raise ValueError(f"{where} line {reader.line_num}: not readable as CSV ({e})") from e
        except UnicodeDecodeError as e:
            raise ValueError(f"{where}: not UTF-8 text ({e})") from e
        with con:
            con.execute("CREATE INDEX photos_photo_id ON photos (photo_id)")
        distinct = con.execute("SELECT COUNT(DISTINCT photo_id) FROM photos").fetchone()[0]
        self.stats.duplicate_photo_ids = self.stats.rows - distinct

    def match(self, photo_id: str, nsid: str = "") -> MetadataRow | None:
        """The first row of ``photo_id`` (counted in :attr:`stats`); None when there is none.

        ``nsid``: the photo's account as its folder or manifest gives it, to count disagreements.
        """
        if not photo_id:
            self.stats.photos_without_photo_id += 1
            return None
        found = self._con.execute(
            "SELECT nsid, licence, date_taken, url FROM photos WHERE photo_id = ? ORDER BY rowid LIMIT 1", (photo_id,)
        ).fetchone()
        if found is None:
            self.stats.photos_without_row += 1
            return None
        self.stats.photos_matched += 1
        row = MetadataRow(*found)
        if nsid and row.nsid and row.nsid != nsid:
            self.stats.nsid_disagreements += 1
        return row

    def close(self, delete: bool = True) -> None:
        """Close the table and (by default) delete its file: it is no part of the index."""
        self._con.close()
        if delete:
            self.db_path.unlink(missing_ok=True)
