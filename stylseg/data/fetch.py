"""Public datasets by name: where to download them, how to check them, which layout reads them.

``stylseg data fetch NAME --dest DIR`` downloads each archive of the entry into
``<cache>/downloads/`` (verified when a sha256 is known, else reported "unverified"),
extracts it into ``DIR`` and checks that the entry's layout (:mod:`stylseg.data.layouts`)
reads the result. Entries marked ``manual`` need a login or a licence click-through: fetch
then says where to download each archive by hand and where to put it; rerunning the command
extracts and checks it. Offline, it fails at once naming the URL and that path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from ..downloads import download_url, downloads_dir, extract, is_archive
from ..utils import Registry, StylsegError, data_dir, write_json


@dataclass(frozen=True)
class RemoteFile:
    url: str
    filename: str
    sha256: Optional[str] = None


@dataclass(frozen=True)
class DatasetEntry:
    """A public dataset: its files, the layout that reads it once extracted, terms and citation."""

    name: str
    description: str
    files: Tuple[RemoteFile, ...]
    layout: str
    homepage: str = ""
    manual: bool = False  # needs a login / licence acceptance: download by hand
    citation: str = ""
    terms: str = ""

    @property
    def verified(self) -> bool:
        return all(f.sha256 for f in self.files)


def _gdrive(file_id: str) -> str:
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


FETCH: Registry = Registry("dataset")

FETCH.add("kvasir-seg", DatasetEntry(
    "kvasir-seg", "Kvasir-SEG: 1000 polyp images and masks (46 MB)",
    (RemoteFile("https://datasets.simula.no/downloads/kvasir-seg.zip", "kvasir-seg.zip"),), layout="kvasir-seg",
    homepage="https://datasets.simula.no/kvasir-seg/",
    citation="Jha et al., Kvasir-SEG: A Segmented Polyp Dataset, MMM 2020",
    terms="research and education use, with citation"))
FETCH.add("pranet-test", DatasetEntry(
    "pranet-test", "PraNet's TestDataset: CVC-300, CVC-ClinicDB, CVC-ColonDB, ETIS-LaribPolypDB, Kvasir (327 MB)",
    (RemoteFile(_gdrive("1Y2z7FD5p5y31vkZwQQomXFRB0HutHyao"), "TestDataset.zip"),), layout="pranet-test",
    homepage="https://github.com/DengPingFan/PraNet",
    citation="Fan et al., PraNet, MICCAI 2020 (and each subset's own citation)",
    terms="research and education use only, with citation of each dataset"))
FETCH.add("pranet-train", DatasetEntry(
    "pranet-train", "PraNet's TrainDataset: 900 Kvasir-SEG + 550 CVC-ClinicDB (400 MB)",
    (RemoteFile(_gdrive("1YiGHLw4iTvKdvbT6MgwO9zcCv8zJ_Bnb"), "TrainDataset.zip"),), layout="pranet-train",
    homepage="https://github.com/DengPingFan/PraNet",
    citation="Fan et al., PraNet, MICCAI 2020 (and each subset's own citation)",
    terms="research and education use only, with citation of each dataset"))
FETCH.add("isic2018-task1", DatasetEntry(
    "isic2018-task1", "ISIC 2018 Task 1 training set: 2594 dermoscopic images and lesion masks (11 GB)",
    (RemoteFile("https://isic-challenge-data.s3.amazonaws.com/2018/ISIC2018_Task1-2_Training_Input.zip",
                "ISIC2018_Task1-2_Training_Input.zip"),
     RemoteFile("https://isic-challenge-data.s3.amazonaws.com/2018/ISIC2018_Task1_Training_GroundTruth.zip",
                "ISIC2018_Task1_Training_GroundTruth.zip")), layout="isic2018-task1",
    homepage="https://challenge.isic-archive.com/data/#2018",
    citation="Codella et al., arXiv:1902.03368 (2019); Tschandl et al., Scientific Data 5 (2018)",
    terms="CC BY-NC 4.0"))
FETCH.add("ham10000", DatasetEntry(
    "ham10000", "HAM10000 images (2 parts) + lesion segmentations of Tschandl et al. + metadata (3 GB)",
    (RemoteFile("https://doi.org/10.7910/DVN/DBW86T", "HAM10000_images_part_1.zip"),
     RemoteFile("https://doi.org/10.7910/DVN/DBW86T", "HAM10000_images_part_2.zip"),
     RemoteFile("https://doi.org/10.7910/DVN/DBW86T", "HAM10000_segmentations_lesion_tschandl.zip"),
     RemoteFile("https://doi.org/10.7910/DVN/DBW86T", "HAM10000_metadata")), layout="ham10000", manual=True,
    homepage="https://doi.org/10.7910/DVN/DBW86T",
    citation="Tschandl, Rosendahl, Kittler, The HAM10000 dataset, Scientific Data 5, 180161 (2018)",
    terms="CC BY-NC 4.0 (accept the terms on Harvard Dataverse)"))
FETCH.add("cvc-clinicdb", DatasetEntry(
    "cvc-clinicdb", "CVC-ClinicDB original release: 612 frames with masks (Original/, Ground Truth/)",
    (RemoteFile("https://polyp.grand-challenge.org/CVCClinicDB/", "CVC-ClinicDB.zip"),),
    layout="cvc-clinicdb-original", manual=True, homepage="https://polyp.grand-challenge.org/CVCClinicDB/",
    citation="Bernal et al., Computerized Medical Imaging and Graphics 43 (2015)",
    terms="research and education use only, with citation"))
FETCH.add("cvc-colondb", DatasetEntry(
    "cvc-colondb", "CVC-ColonDB original release: 380 frames (N.tiff) with masks (pN.tiff)",
    (RemoteFile("http://mv.cvc.uab.es/projects/colon-qa/cvccolondb", "CVC-ColonDB.zip"),),
    layout="cvc-colondb-tiff", manual=True, homepage="http://mv.cvc.uab.es/projects/colon-qa/cvccolondb",
    citation="Bernal, Sanchez, Vilarino, Pattern Recognition 45(9) (2012)",
    terms="research and education use only, with citation"))


def fetch_dataset(name: str, dest: Optional[os.PathLike] = None, progress: bool = True) -> Path:
    """Download, verify, extract and check the dataset ``name`` into ``dest`` (default
    ``utils.data_dir()/<name>``); returns the folder the entry's layout reads.

    Archives are cached in ``<cache>/downloads/<name>/``; a file already there (e.g. put by
    hand) is used. Each step is skipped when done, so rerunning resumes.
    """
    from .layouts import LAYOUTS

    e = FETCH.get(name)
    dest = Path(dest) if dest else data_dir() / name
    cache = downloads_dir() / name
    got: Dict[str, Path] = {}
    for f in e.files:
        target = cache / f.filename
        if e.manual and not target.is_file():
            missing = [g for g in e.files if not (cache / g.filename).is_file()]
            lines = "; ".join(f"{g.filename} -> {cache / g.filename}" for g in missing)
            raise StylsegError(f"dataset {name} must be downloaded by hand (licence or login) from {e.homepage}: "
                               f"put {lines}; then run `stylseg data fetch {name} --dest {dest}` again")
        got[f.filename] = download_url(f.url, target, sha256=f.sha256, progress=progress)
    dest.mkdir(parents=True, exist_ok=True)
    for fname, p in got.items():
        if is_archive(p):
            extract(p, dest)
        elif not (dest / fname).exists():
            import shutil

            shutil.copyfile(p, dest / fname)
    lay = LAYOUTS.get(e.layout)
    root = lay.find(dest)
    if root is None:
        raise StylsegError(f"{dest}: the files of {name} were extracted but do not look like layout {e.layout} "
                           f"({lay.structure}); the archive may have changed: check the folder by hand")
    n = len(lay.read(root, None))
    write_json(dest / ".stylseg_fetch.json", {"dataset": name, "layout": e.layout, "root": str(root), "n": n,
                                               "files": {f.filename: f.url for f in e.files},
                                               "verified": e.verified})
    return root
