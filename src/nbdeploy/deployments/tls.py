"""HTTPS for a deployment: a certificate made for it, and clients that verify the server by it.

>>> cert, key = make_certificate(folder, "0.0.0.0")   # doctest: +SKIP
>>> fingerprint(cert)                                 # doctest: +SKIP
'SHA-256 3F:0A:…'

The certificate is self-signed, valid for the names the server can be reached by (the bound
address; for a wildcard address this machine's host names; always ``localhost`` and the
loopback addresses), for 397 days (what browsers accept), with an EC P-256 key written
owner-only beside it. A client trusts exactly that certificate (and the system's CAs, for
a certificate of the user's own signed by one): the kernel, the CLI and the panel never
turn verification off.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import socket
import ssl
from pathlib import Path

from nbdeploy._files import write_atomic
from nbdeploy.config import is_loopback
from nbdeploy.errors import DeploymentError, Docs, InvalidInputError

__all__ = ["cert_names", "check_pair", "client_context", "describe", "fingerprint", "make_certificate", "url", "verify"]

_WILDCARDS = ("0.0.0.0", "::", "")


def url(host: str, port: int | None, cert: str | None) -> str:
    """The base URL the kernel reaches a local server at. Over HTTPS a wildcard address is
    reached by a name of this machine the certificate holds (``0.0.0.0`` is no name to verify):
    loopback, ``localhost`` or the host's name, in that order."""
    if cert and host in _WILDCARDS:
        host = _local_name(cert) or "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if cert else 'http'}://{shown}:{port}"


def _local_name(cert: str) -> str | None:
    try:
        names = cert_names(cert)
    except Exception:  # unreadable or unparsable: the server cannot be reached by name; check_pair says so
        return None
    for candidate in ("127.0.0.1", "::1", "localhost", socket.gethostname, socket.getfqdn):  # DNS last, if needed
        name = candidate() if callable(candidate) else candidate
        if _covers(names, name):
            return name
    return None


def cert_names(cert: str) -> frozenset[str]:
    """The DNS names and IP addresses a certificate is valid for (its subject alternative names)."""
    path = Path(cert)
    return _names_of(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _names_of(cert: str, stamp: int) -> frozenset[str]:
    from cryptography import x509

    loaded = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    try:
        san = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset([*san.get_values_for_type(x509.DNSName),
                      *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))])  # fmt: skip


def _covers(names: frozenset[str], host: str) -> bool:
    """Whether a certificate of ``names`` is valid for ``host`` (a ``*.`` name covers one label)."""
    host = host.lower().rstrip(".")
    if host in {n.lower() for n in names}:
        return True
    _, _, rest = host.partition(".")
    return bool(rest) and f"*.{rest}" in {n.lower() for n in names}


def describe(host: str, cert: str | None, insecure_http: bool) -> str:
    """How clients reach a deployment, for ``status``: HTTPS with the certificate's
    fingerprint, or plain HTTP and why that is allowed."""
    if cert:
        try:
            return f"HTTPS, certificate {fingerprint(cert)}"
        except (OSError, ValueError) as exc:
            return f"HTTPS, certificate {cert} unreadable ({type(exc).__name__})"
    if insecure_http:
        return "plain HTTP off loopback (--insecure-http): tokens and rows cross the network in clear text"
    return "HTTP on loopback" if is_loopback(host) else "plain HTTP off loopback"


def _names(host: str) -> tuple[list[str], list[str]]:
    """DNS names and IP addresses the certificate is valid for."""
    dns, ips = ["localhost"], ["127.0.0.1", "::1"]
    if host in _WILDCARDS:
        dns += sorted({socket.gethostname(), socket.getfqdn()} - {""})
    else:
        try:
            ipaddress.ip_address(host)
            ips.append(host)
        except ValueError:
            dns.append(host)
    return list(dict.fromkeys(dns)), list(dict.fromkeys(ips))


def make_certificate(folder: Path, host: str) -> tuple[str, str]:
    """Write ``tls/cert.pem`` and ``tls/key.pem`` (owner-only) in ``folder``; their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    dns, ips = _names(host)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"nbdeploy {folder.name}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=397))
        .add_extension(x509.SubjectAlternativeName([*map(x509.DNSName, dns),
                                                    *(x509.IPAddress(ipaddress.ip_address(i)) for i in ips)]),
                       critical=False)
        # a self-signed certificate that clients trust directly (as its own anchor); as a CA it could
        # sign for any name, so its name constraints limit it to its own names (a leaked key then
        # impersonates nothing but this server)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.NameConstraints(permitted_subtrees=[
            *map(x509.DNSName, dns),
            *(x509.IPAddress(ipaddress.ip_network(i)) for i in ips)], excluded_subtrees=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    tls = folder / "tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    write_atomic(tls / "key.pem", key_pem.decode(), private=True)
    write_atomic(tls / "cert.pem", cert.public_bytes(serialization.Encoding.PEM).decode())
    return str(tls / "cert.pem"), str(tls / "key.pem")


def check_pair(cert: str, key: str, host: str) -> tuple[str, str]:
    """The absolute paths of a certificate and key of the user's own, once they load together
    and the certificate names where nbdeploy reaches the server (one sentence otherwise: the
    server would fail later, with less to say)."""
    paths = [Path(p).expanduser().absolute() for p in (cert, key)]
    for option, path in zip(("--tls-cert", "--tls-key"), paths, strict=True):
        if not path.is_file():
            raise InvalidInputError(f"Invalid {option}: {path} is not a file.")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(paths[0]), str(paths[1]))
    except (ssl.SSLError, OSError) as exc:
        raise InvalidInputError(
            f"--tls-cert and --tls-key do not load as a PEM certificate and its private key ({exc.strerror or exc}).",
            docs=Docs.HTTPS,
        ) from None
    try:
        names = cert_names(str(paths[0]))
    except Exception as exc:  # OpenSSL loads it, cryptography cannot read its names
        raise InvalidInputError(f"--tls-cert's names cannot be read ({type(exc).__name__}).", docs=Docs.HTTPS) from None
    reached = _local_name(str(paths[0])) if host in _WILDCARDS else host
    if reached is None or not _covers(names, reached):
        where = "this machine (127.0.0.1, localhost or its host name)" if host in _WILDCARDS else repr(host)
        raise InvalidInputError(
            f"--tls-cert is not valid for {where}, where nbdeploy reaches the server: serve with --host set to a "
            "name the certificate holds, or add that name to the certificate.",
            docs=Docs.HTTPS,
        )
    return str(paths[0]), str(paths[1])


def fingerprint(cert: str) -> str:
    """``SHA-256 AB:CD:…`` of the certificate (what a client compares before trusting it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    digest = x509.load_pem_x509_certificate(Path(cert).read_bytes()).fingerprint(hashes.SHA256())
    return "SHA-256 " + ":".join(f"{b:02X}" for b in digest)


def verify(cert: str | None) -> ssl.SSLContext | bool:
    """What an HTTP client verifies a deployment's server with (``True``: plain HTTP); a
    certificate that is gone or damaged is one sentence (never a fallback to no check)."""
    if not cert:
        return True
    try:
        return client_context(cert)
    except (OSError, ssl.SSLError) as exc:
        raise DeploymentError(
            f"The deployment's certificate {cert} cannot be read ({type(exc).__name__}): nbdeploy does not talk "
            "to a server it cannot verify; serve it again (with --tls a new certificate is made)."
        ) from None


def client_context(cert: str) -> ssl.SSLContext:
    """A context that verifies the server by ``cert`` (or by the system's CAs)."""
    path = Path(cert)
    stamp = path.stat().st_mtime_ns if path.exists() else 0
    return _context(str(path), stamp)


@functools.lru_cache(maxsize=32)
def _context(cert: str, stamp: int) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=cert)
    # a certificate of the user's own, signed by a CA, is trusted as given (not only its root)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context
