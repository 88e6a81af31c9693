"""The only place jaxqc touches the network: an explicit `jaxqc data download NAME`.

Each file is written to a temporary name, checked (size, SHA-256, and that jaxqc can read it) and only
then renamed into place. A checksum given with --sha256 (or pinned in SOURCES) must match, or the file is
deleted. Where the publisher gives no checksum and none is pinned, the SHA-256 of the first download is
printed and recorded beside the file, and every later `download` of the same name is checked against it.
Without network the command says where to fetch the file by hand and where to put it.

Only https: a plain-http URL (in SOURCES, or a redirect to one) is refused, so nobody on the way can swap
the file. No checksum is pinned: neither publisher gives one, and pinning one we have not verified against
the served file would be worse than none. (../shared/data holds MD17-derived files, but not the files these
URLs serve: `ethanol_ccsd_t-train.npz` comes out of the zip, `ethanol_dft_first2000.npz` is a subset.)
So the careful policy here is: https, then trust on first use, said loudly (a warning naming the SHA-256 to
compare with a colleague's copy or to pass as --sha256 next time), and checked on every later download.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import JaxqcError
from .io import atomic_path, file_digest
from .registry import cache_dir

SOURCES = {
    "qm9-xyz": {
        "url": "https://ndownloader.figshare.com/files/3195389",
        "filename": "dsgdb9nsd.xyz.tar.bz2",
        "sha256": None,
        "description": "QM9, original xyz tarball (Ramakrishnan et al. 2014, figshare), ~86 MB",
    },
    **{
        f"md17-{mol}": {
            "url": f"https://www.quantum-machine.org/gdml/data/npz/md17_{mol}.npz",
            "filename": f"md17_{mol}.npz",
            "sha256": None,
            "description": f"MD17 {mol} DFT trajectory, sGDML npz (Chmiela et al.)",
        }
        for mol in ("aspirin", "benzene2017", "ethanol", "malonaldehyde", "naphthalene", "salicylic",
                    "toluene", "uracil")
    },
    "ethanol-ccsd-t": {
        "url": "https://www.quantum-machine.org/gdml/data/npz/ethanol_ccsd_t.zip",
        "filename": "ethanol_ccsd_t.zip",
        "sha256": None,
        "description": "ethanol CCSD(T)/cc-pVTZ train/test npz (sGDML)",
    },
}


def check_secure(url: str) -> None:
    """A one-line JaxqcError for a plain-http URL: downloads go over https (or a local file:// copy)."""
    if str(url).lower().startswith("http://"):
        raise JaxqcError(f"{url}: refusing plain http (the file could be altered on the way); use https")


def sha256_of(path) -> str:
    return file_digest(path, "sha256")


def download(name: str, dest=None, sha256: str | None = None, timeout_s: float = 60.0) -> Path:
    """Download SOURCES[name] into `dest` (default $JAXQC_CACHE/downloads), verified; return its path."""
    if name not in SOURCES:
        raise JaxqcError(f"unknown download {name!r}; available: {', '.join(SOURCES)}")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise JaxqcError(f"--sha256 {sha256!r}: expected 64 hexadecimal digits")
    entry = SOURCES[name]
    check_secure(entry["url"])
    folder = Path(dest) if dest else cache_dir() / "downloads"
    target = folder / entry["filename"]
    record = target.with_name(target.name + ".sha256.json")
    expected = sha256 or entry["sha256"] or (json.loads(record.read_text())["sha256"] if record.exists() else None)
    if target.exists():
        got = sha256_of(target)
        if expected and got != expected:
            raise JaxqcError(f"{target}: exists but its SHA-256 {got} differs from the expected {expected}; "
                             f"delete it and download again")
        return target
    try:
        with atomic_path(target) as tmp:
            print(f"downloading {entry['url']} -> {target}", file=sys.stderr)
            with urllib.request.urlopen(entry["url"], timeout=timeout_s) as response, open(tmp, "wb") as fh:
                check_secure(response.geturl() if hasattr(response, "geturl") else entry["url"])  # no downgrade
                shutil.copyfileobj(response, fh, length=1 << 20)
            got = sha256_of(tmp)
            if expected and got != expected:
                raise JaxqcError(f"{entry['url']}: SHA-256 {got} does not match the expected {expected}; "
                                 f"file discarded")
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise JaxqcError(f"cannot download {name} ({err}); without network, fetch {entry['url']} by hand "
                         f"and put it at {target}") from None
    if not expected:
        record.write_text(json.dumps({"sha256": got, "url": entry["url"]}))
        print(f"jaxqc: warning: {target}: not verified against a published checksum (none exists); its SHA-256 "
              f"is {got}: recorded in {record.name} and checked on every later download", file=sys.stderr)
    os.chmod(target, 0o444)
    return target
