"""What an SMTP server presents after STARTTLS, seen as a sending MTA sees it.

The lab's mail servers (Postfix, Exim) are judged by the certificate they
present on their SMTP port; this asks them directly, without verifying
anything, so a test can tell which of two certificates is being served.
"""

from __future__ import annotations

import smtplib
import ssl

from cryptography import x509

from .process import LabError

EHLO_NAME = "probe.dane.test"


class StartTLSError(LabError):
    """The server did not complete STARTTLS (not offered, refused, or the
    handshake failed)."""


def starttls_certificate(
    port: int, *, address: str = "127.0.0.1", server_name: str | None = None, timeout: float = 5.0
) -> x509.Certificate:
    """The end-entity certificate the server at ``address``:``port`` presents
    after EHLO and STARTTLS (no verification: any certificate is returned)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with smtplib.SMTP(address, port, local_hostname=EHLO_NAME, timeout=timeout) as client:
            client.ehlo()
            if not client.has_extn("starttls"):
                raise StartTLSError(f"{address}:{port} does not offer STARTTLS")
            code, reply = client.docmd("STARTTLS")
            if code != 220:
                text = reply.decode("utf-8", "replace")
                raise StartTLSError(f"{address}:{port} refused STARTTLS: {code} {text}")
            sock = context.wrap_socket(client.sock, server_hostname=server_name)
            client.sock = sock
            der = sock.getpeercert(binary_form=True)
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                pass  # the certificate is all we came for
    except ssl.SSLError as exc:
        raise StartTLSError(f"{address}:{port}: TLS handshake after STARTTLS: {exc}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise StartTLSError(f"{address}:{port}: SMTP session failed: {exc!r}") from exc
    if der is None:
        raise StartTLSError(f"{address}:{port} presented no certificate")
    return x509.load_der_x509_certificate(der)
