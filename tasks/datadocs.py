"""Data Docs that work offline: the site's CSS and JavaScript shipped with it, links rewritten.

Great Expectations' Data Docs pages load bootstrap, jquery, bootstrap-table, font-awesome and
vega from public CDNs; without internet they render unstyled and their validation tables stay
empty (bootstrap-table fills them). Data teams often run where nothing public is reachable.

So, after a run builds the site, every asset it names is put under `<site>/static/vendor/`
and the pages point there (relative links: the folder can be copied or served anywhere). The
files come from the npm registry's package tarballs at the versions the pages name (pinned
below, each checked against the registry's SHA-512 integrity), fetched once into a cache:

- `MEMOS_ETL_DATA_DOCS_ASSETS`: a folder holding the extracted packages (copy the cache of a
  machine that has the registry to one that has not); default `~/.cache/memos-etl/data-docs-assets`;
- `MEMOS_ETL_NPM_REGISTRY`: a registry mirror (Artifactory, Verdaccio); default the public one.

When the assets cannot be had, the pages keep their CDN links and the run says so; a run
never fails over its Data Docs.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    integrity: str  # the registry's dist.integrity (sha512) for this version's tarball
    keep: tuple[str, ...]  # folders of the tarball to extract (below its `package/`)

    @property
    def folder(self) -> str:
        return f"{self.name.split('/')[-1]}-{self.version}"

    def tarball(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{self.name}/-/{self.name.split('/')[-1]}-{self.version}.tgz"


PACKAGES = (
    Package(
        "bootstrap",
        "4.3.1",
        "sha512-rXqOmH1VilAt2DyPzluTi2blhk17bO7ef+zLLPlWvG494pDxcM234pJ8wTc/6R40UWizAIIMgxjvxZg5kmsbag==",
        ("dist/css", "dist/js"),
    ),
    Package(
        "jquery",
        "3.7.1",
        "sha512-m4avr8yL8kmFN8psrbFFFmB/If14iN5o9nw/NgnnM+kybDJpRsAynV2BsfpTYrTRysYUdADVD7CkUUizgkpLfg==",
        ("dist",),
    ),
    Package(
        "popper.js",
        "1.12.9",
        "sha512-s0EEi9xiSCdqz9lV4IiVH5yIZnDX/U1t0tCjB+0jXx9jW8lrR7kOpVupiUg175ogqVoudpDXHF1p6dKATCHMeg==",
        ("dist/umd",),
    ),
    Package(
        "bootstrap-datepicker",
        "1.9.0",
        "sha512-9rYYbaVOheGYxjOr/+bJCmRPihfy+LkLSg4fIFMT9Od8WwWB/MB50w0JO1eBgKUMbb7PFHQD5uAfI3ArAxZRXA==",
        ("dist/css", "dist/js"),
    ),
    Package(
        "@fortawesome/fontawesome-free",
        "6.6.0",
        "sha512-60G28ke/sXdtS9KZCpZSHHkCbdsOGEhIUGlwq6yhY74UpTiToIh8np7A8yphhM4BWsvNFtIvLpi4co+h9Mr9Ow==",
        ("css", "webfonts"),
    ),
    Package(
        "@forevolve/bootstrap-dark",
        "1.1.0",
        "sha512-A3ucpEpxPoTVO490lZZCfjPXxv832l7mm1IxX3bXyxvgwnPGXDLyh7dWrphXKO8YBAu3EswbBEu3VSW8NRMW3A==",
        ("dist/css",),
    ),
    Package(
        "bootstrap-table",
        "1.19.1",
        "sha512-WvV+l1AI/C+zThaKmfHmi/IuayVNB0qdFyEhFx1jyZhO0oLtNJNANkCR3rvJf6Dkh72dsLElxpE/bzK9seEQLA==",
        ("dist/bootstrap-table.min.css", "dist/bootstrap-table.min.js", "dist/extensions/filter-control"),
    ),
    # the pages ask for the latest 5.x / 5.x / 6.x: pinned here to what that was when this was written
    Package(
        "vega",
        "5.33.1",
        "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
        ("build/vega.min.js",),
    ),
    Package(
        "vega-lite",
        "5.23.0",
        "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
        ("build/vega-lite.min.js",),
    ),
    Package(
        "vega-embed",
        "6.29.0",
        "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
        ("build/vega-embed.min.js",),
    ),
)

#: every external asset URL the pages name -> the file under static/vendor/ that replaces it
LINKS = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap-4.3.1/dist/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap-4.3.1/dist/js/bootstrap.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1/dist/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js-1.12.9/dist/umd/popper.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": "bootstrap-datepicker-1.9.0/dist/css/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": "bootstrap-datepicker-1.9.0/dist/js/bootstrap-datepicker.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome-free-6.6.0/css/all.min.css",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": "bootstrap-dark-1.1.0/dist/css/bootstrap-prefers-dark.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table-1.19.1/dist/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table-1.19.1/dist/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": "bootstrap-table-1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
    # some pages name 1.19.0's stylesheet of the same extension: 1.19.1's is served for it
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": "bootstrap-table-1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": "bootstrap-table-1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega-5.33.1/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite-5.23.0/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed-6.29.0/build/vega-embed.min.js",
}
#: GX's logos on its own web-assets bucket: the site's static/images has the same pictures
_LOGO = re.compile(
    r"https://great-expectations-web-assets\.s3\.[a-z0-9-]+\.amazonaws\.com/([A-Za-z0-9_.-]+)(\?[^\"'\s)]*)?"
)
_LOGO_FILES = {"full_logo_dark.png": "logo-long.png", "logo-long.png": "logo-long.png"}
_ATTR = re.compile(r"""(?P<q>["'])(?P<url>https://[^"'\s]+)(?P=q)""")


def cache_dir() -> Path:
    explicit = os.environ.get("MEMOS_ETL_DATA_DOCS_ASSETS")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "memos-etl" / "data-docs-assets"


def _verify(data: bytes, integrity: str) -> bool:
    algo, _, digest = integrity.partition("-")
    return base64.b64encode(hashlib.new(algo, data).digest()).decode() == digest


def ensure_assets(cache: Path | None = None, registry: str | None = None, timeout: float = 60.0) -> Path:
    """The extracted packages in `cache`, fetching those missing from the npm registry.
    Raises OSError (with what is missing and from where) when one cannot be had."""
    cache = cache or cache_dir()
    registry = registry or os.environ.get("MEMOS_ETL_NPM_REGISTRY") or "https://registry.npmjs.org"
    if all((cache / pkg.folder / ".complete").exists() for pkg in PACKAGES):
        return cache
    import fcntl

    cache.mkdir(parents=True, exist_ok=True)
    # runs rendering Data Docs at once on a fresh machine: one fetches, the others wait for it
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _fetch_missing(cache, registry, timeout)
    return cache


def _fetch_missing(cache: Path, registry: str, timeout: float) -> None:
    for pkg in PACKAGES:
        done = cache / pkg.folder / ".complete"
        if done.exists():
            continue
        import requests

        url = pkg.tarball(registry)
        try:
            resp = requests.get(url, timeout=timeout)
            resp.raise_for_status()
        except requests.RequestException as exc:
            raise OSError(
                f"{pkg.name}@{pkg.version} is not in {cache} and cannot be fetched from {url}: {exc}"
            ) from None
        if not _verify(resp.content, pkg.integrity):
            raise OSError(f"{url}: the tarball does not match its pinned integrity {pkg.integrity[:20]}...")
        tmp = cache / f".{pkg.folder}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(fileobj=io.BytesIO(resp.content), mode="r:gz") as tar:
            for member in tar.getmembers():
                rel = member.name.split("/", 1)[1] if "/" in member.name else ""
                if not member.isfile() or not any(rel == k or rel.startswith(k + "/") for k in pkg.keep):
                    continue
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                data = tar.extractfile(member)
                assert data is not None  # a regular member (checked above)
                out.write_bytes(data.read())
        (tmp / ".complete").write_text(pkg.integrity + "\n")
        shutil.rmtree(cache / pkg.folder, ignore_errors=True)
        tmp.rename(cache / pkg.folder)


def localise(site: Path, cache: Path | None = None) -> int:
    """Copy the assets into `site`/static/vendor and point every page there; returns how many
    links were rewritten. Raises OSError when the assets cannot be had (pages left as they were)."""
    cache = ensure_assets(cache)
    vendor = site / "static" / "vendor"
    for pkg in PACKAGES:
        if not (vendor / pkg.folder / ".complete").exists():
            shutil.rmtree(vendor / pkg.folder, ignore_errors=True)
            shutil.copytree(cache / pkg.folder, vendor / pkg.folder)
    images = site / "static" / "images"
    rewritten = 0
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        up = os.path.relpath(site / "static", page.parent).replace(os.sep, "/")

        def local(m: re.Match, up: str = up) -> str:
            nonlocal rewritten
            url = m.group("url")
            target = LINKS.get(url)
            if target is not None:
                rewritten += 1
                return f"{m.group('q')}{up}/vendor/{target}{m.group('q')}"
            logo = _LOGO.fullmatch(url)
            if logo and (images / _LOGO_FILES.get(logo.group(1), logo.group(1))).exists():
                rewritten += 1
                return f"{m.group('q')}{up}/images/{_LOGO_FILES.get(logo.group(1), logo.group(1))}{m.group('q')}"
            return m.group(0)  # links a reader follows (docs, the GX site) stay as they are

        new = _ATTR.sub(local, text)
        if new != text:
            page.write_text(new, encoding="utf-8")
    return rewritten


def external_assets(site: Path) -> set[str]:
    """URLs of scripts, stylesheets and images the pages still load from elsewhere."""
    out = set()
    tag = re.compile(r"""<(?:script|link|img)\b[^>]*?(?:src|href)=["'](https?://[^"']+)["']""", re.I)
    for page in site.rglob("*.html"):
        out.update(tag.findall(page.read_text(encoding="utf-8")))
    return out
