"""Image references: Docker's grammar and normalisation (``busybox`` means
``docker.io/library/busybox:latest``), and how to tell a reference from an image id.

The grammar is distribution/reference's (``regexp.go``), the normalisation its
``ParseNormalizedNamed`` + ``TagNameOnly`` (``normalize.go``)::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path            (at most 255 characters, domain included)
    domain     := host [ ":" port ]              host: DNS-ish name, IPv4, or [IPv6] (no zone)
    path       := component ( "/" component )*   component: [a-z0-9]+ joined by "." "_" "__" "-"+
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := "sha256:" 64 lowercase hex     (lamina stores sha256 only, see graph.digest)

The first ``/``-separated part of a name is a *domain* only if it is ``localhost``, contains ``.``
or ``:``, or has an uppercase letter; otherwise the name is on Docker Hub (``docker.io``) and a
one-part path gets the ``library/`` prefix. ``index.docker.io`` is spelled ``docker.io``.

**References vs image ids.** ``parse_reference`` refuses a bare 64-hex string (Docker does too:
it would be ambiguous with an image id). A caller given a user's ``REF|ID`` argument does what
Docker does: a full id (``sha256:<64hex>`` or 64 hex) is an id; otherwise try it as a reference
and, if no such reference is stored, try ``is_image_id_prefix`` and look it up as a short id
(``abcd`` is both a valid repository name and a valid id prefix; the reference wins).

Deviations from Docker, all stricter: a first component that looks like a host (has ``.`` or
``:``) but is not a valid one is refused instead of silently becoming a path; ports above 65535
are refused; digests other than sha256 are refused (``graph.digest.Digest``).
"""

from __future__ import annotations

import re

from drivers.sys.record import Frozen
from graph.digest import Digest
from graph.errors import InvalidInput

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "NAME_MAX",
    "Reference",
    "image_id_hex_prefix",
    "is_full_image_id",
    "is_image_id_prefix",
    "parse_reference",
]

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255  # distribution's NameTotalLengthMax, counted on the normalised name
_INPUT_MAX = 1024  # refuse absurd inputs before any regex sees them

# Python's \w, \d and $ are not Go's (Unicode classes; $ matches before a final newline), so the
# classes are spelled out and every match is a fullmatch.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = _ALNUM + r"(?:" + _SEPARATOR + _ALNUM + r")*"
_PATH_RE = re.compile(_PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN_RE = re.compile(r"(?:" + _DOMAIN_NAME + "|" + _IPV6 + r")(?::([0-9]+))?")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
_ID_PREFIX_RE = re.compile(r"(?:sha256:)?([a-f0-9]{4,64})")


def _show(s: str) -> str:
    """The input as it appears in an error message: quoted, control characters escaped,
    cut short so a hostile argument cannot flood a terminal."""
    r = repr(s)
    return r if len(r) <= 100 else r[:96] + "...'"


class Reference(Frozen):
    """A normalised, validated image reference.

    ``domain`` is the registry (``docker.io``, ``localhost:5000``, ``[::1]:5000``), ``path`` the
    repository on it (``library/busybox``). A reference may carry a tag, a digest, or both (Docker
    keeps both: ``busybox:1.36@sha256:...`` pulls by digest and records the tag). Construction
    validates the parts, so every ``Reference`` in the program is well formed.
    """

    __slots__ = ("domain", "path", "tag", "digest")
    _defaults = {"tag": None, "digest": None}
    domain: str
    path: str
    tag: str | None
    digest: Digest | None

    def __post_init__(self) -> None:
        if not isinstance(self.domain, str) or not _valid_domain(self.domain):
            raise InvalidInput(f"invalid registry host {_show(str(self.domain))}")
        if not isinstance(self.path, str) or not _PATH_RE.fullmatch(self.path):
            raise InvalidInput(f"invalid repository name {_show(str(self.path))}")
        if len(self.domain) + 1 + len(self.path) > NAME_MAX:
            raise InvalidInput(
                f"repository name must not be more than {NAME_MAX} characters: "
                f"{_show(self.domain + '/' + self.path)}"
            )
        if self.tag is not None and (not isinstance(self.tag, str) or not _TAG_RE.fullmatch(self.tag)):
            raise InvalidInput(f"invalid tag {_show(str(self.tag))}")
        if self.digest is not None and not isinstance(self.digest, Digest):
            object.__setattr__(self, "digest", Digest(self.digest))

    @property
    def name(self) -> str:
        """``domain/path``: the repository's full name, without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def repository(self) -> str:
        """The repository name as the registry's HTTP API spells it (``library/busybox``)."""
        return self.path

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += ":" + self.tag
        if self.digest is not None:
            out += "@" + self.digest
        return out

    def familiar_name(self) -> str:
        """The name as Docker shows it: ``docker.io/`` dropped, and ``library/`` dropped when
        nothing else follows it (``docker.io/library/foo/bar`` stays ``library/foo/bar``)."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        path = self.path
        if path.startswith(OFFICIAL_PREFIX) and "/" not in path[len(OFFICIAL_PREFIX):]:
            return path[len(OFFICIAL_PREFIX):]
        return path

    def familiar(self) -> str:
        """Docker's short form with tag and digest: ``busybox:latest``, ``org/app@sha256:...``,
        ``localhost:5000/x:1``."""
        out = self.familiar_name()
        if self.tag is not None:
            out += ":" + self.tag
        if self.digest is not None:
            out += "@" + self.digest
        return out

    def with_tag(self, tag: str | None) -> "Reference":
        """The same repository and digest with ``tag`` (validated; ``None`` drops the tag)."""
        return Reference(self.domain, self.path, tag, self.digest)

    def with_digest(self, digest: Digest | str | None) -> "Reference":
        """The same repository and tag with ``digest`` (validated; ``None`` drops it)."""
        return Reference(self.domain, self.path, self.tag, None if digest is None else Digest(digest))

    def name_only(self) -> "Reference":
        """The repository alone, no tag, no digest."""
        return Reference(self.domain, self.path)


def _valid_domain(domain: str) -> bool:
    m = _DOMAIN_RE.fullmatch(domain)
    if not m:
        return False
    port = m.group(1)
    return port is None or (len(port) <= 5 and int(port) <= 65535)


def _split_docker_domain(name: str) -> tuple[str, str]:
    """distribution's ``splitDockerDomain``: (domain, rest) with Hub defaults applied."""
    first, sep, rest = name.partition("/")
    if not sep:
        return DEFAULT_DOMAIN, OFFICIAL_PREFIX + name
    if first == "localhost":
        domain, remote = first, rest
    elif first == LEGACY_DEFAULT_DOMAIN:
        domain, remote = DEFAULT_DOMAIN, rest
    elif "." in first or ":" in first or first.lower() != first:
        domain, remote = first, rest
    else:
        domain, remote = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remote.split("@", 1)[0].split(":", 1)[0]:
        remote = OFFICIAL_PREFIX + remote
    return domain, remote


def parse_reference(s: str, *, default_tag: bool = True) -> Reference:
    """Parse a user's image reference the way ``docker pull`` does.

    ``busybox`` -> ``docker.io/library/busybox:latest``; ``org/x`` -> ``docker.io/org/x:latest``;
    ``localhost/x``, ``host:5000/x``, ``[::1]:5000/x`` keep their registry; ``x@sha256:...`` has
    no tag; ``x:tag@sha256:...`` keeps both. With ``default_tag`` (the default) a reference with
    neither tag nor digest gets ``latest``.

    Raises ``InvalidInput`` (one line naming the input and the problem) for: empty input, a bare
    64-hex image id, uppercase in the repository path, a bad host, port, path, tag or digest, and
    a normalised name over 255 characters.
    """
    if not isinstance(s, str):
        raise InvalidInput(f"invalid reference: expected a string, got {type(s).__name__}")
    if s == "":
        raise InvalidInput("invalid reference: empty")
    if len(s) > _INPUT_MAX:
        raise InvalidInput(f"invalid reference {_show(s)}: too long ({len(s)} characters)")
    if _IDENTIFIER_RE.fullmatch(s):
        raise InvalidInput(
            f"invalid reference {_show(s)}: a 64-hex string is an image id, not a repository name"
        )
    domain, remainder = _split_docker_domain(s)

    remainder, at, digest_s = remainder.partition("@")
    path, colon, tag_s = remainder.partition(":")
    if path.lower() != path:
        raise InvalidInput(f"invalid reference {_show(s)}: repository name must be lowercase ({_show(path)[1:-1]})")
    if not _valid_domain(domain):
        raise InvalidInput(f"invalid reference {_show(s)}: invalid registry host {_show(domain)}")
    if not _PATH_RE.fullmatch(path):
        raise InvalidInput(
            f"invalid reference {_show(s)}: invalid repository name {_show(path)} (lowercase "
            "letters and digits, separated by '.', '_', '__' or '-', components split by '/')"
        )
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise InvalidInput(
            f"invalid reference {_show(s)}: repository name must not be more than {NAME_MAX} "
            f"characters (normalised name has {len(domain) + 1 + len(path)})"
        )
    tag: str | None = None
    if colon:
        if not _TAG_RE.fullmatch(tag_s):
            raise InvalidInput(
                f"invalid reference {_show(s)}: invalid tag {_show(tag_s)} "
                "(1-128 of A-Z a-z 0-9 _ . -, not starting with . or -)"
            )
        tag = tag_s
    digest: Digest | None = None
    if at:
        try:
            digest = Digest(digest_s)
        except InvalidInput as e:
            raise InvalidInput(f"invalid reference {_show(s)}: {e}") from None
    if default_tag and tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def is_full_image_id(s: str) -> bool:
    """True for a complete image id: ``sha256:<64 hex>`` or 64 hex alone."""
    if not isinstance(s, str):
        return False
    return bool(_IDENTIFIER_RE.fullmatch(s[7:] if s.startswith("sha256:") else s))


def is_image_id_prefix(s: str) -> bool:
    """True if ``s`` may name an image by (short) id: 4 to 64 lowercase hex digits, optionally
    after ``sha256:``. This is moby's ``truncatedID`` rule (``^(sha256:)?([a-f0-9]{4,64})$``).

    Such a string may also be a valid reference (``cafe``): try the reference first, then the id
    prefix; a prefix that matches several images is the caller's ``Conflict`` to raise."""
    return isinstance(s, str) and _ID_PREFIX_RE.fullmatch(s) is not None


def image_id_hex_prefix(s: str) -> str:
    """The hex part of an image id prefix (``sha256:abcd`` -> ``abcd``), for a prefix lookup.
    Raises ``InvalidInput`` if ``s`` is not one (see ``is_image_id_prefix``)."""
    m = _ID_PREFIX_RE.fullmatch(s) if isinstance(s, str) else None
    if m is None:
        raise InvalidInput(f"invalid image id {_show(str(s))}: want 4-64 lowercase hex digits")
    return m.group(1)
