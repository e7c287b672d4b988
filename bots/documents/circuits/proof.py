"""The proof a validated document leaves: a receipt (bordereau) in PDF, and a PAdES seal.

The seal is made with the collectivité's certificate: the one named in the config
(``[circuits] cachet_certificat`` and ``cachet_cle``, PEM) in production; otherwise one
generated once for the stack, self-signed, its key in ``<data>/secrets/cachet.key``
(0600). A PDF whose last step was a signature is archived sealed, with a visible stamp
on its last page: any change to the file afterwards breaks the seal, which any PAdES
validator (pyHanko, Adobe Reader, the EU's DSS) shows.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fontTools import subset as font_subset
from fpdf import FPDF
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.signers.pdf_cms import SimpleSigner
from pyhanko.stamp import TextStampStyle
from pyhanko_certvalidator.registry import SimpleCertificateStore

from maillage.i18n import t
from maillage.secretstore import check_private, write_private

FONT_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
              "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
# What a receipt writes in practice: Latin scripts, Greek, Cyrillic, punctuation, arrows, €.
# Fonts cut down to these parse in a tenth of the time of DejaVu's 6,000 glyphs.
RECEIPT_CHARACTERS = frozenset(
    chr(code) for start, end in ((0x20, 0x24F), (0x370, 0x4FF), (0x2000, 0x206F), (0x20AC, 0x20AC),
                                 (0x2190, 0x21FF)) for code in range(start, end + 1))
SEAL_FIELD = "CachetMaillage"
STAMP_BOX = (300, 20, 580, 100)  # bottom right of the last page, in PDF points


@dataclass(frozen=True)
class SealIdentity:
    certificate_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:  # the key never reaches a log
        return "SealIdentity(…)"

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem)


def seal_identity(secrets_folder: Path, organisation: str, certificate: str = "", key: str = "") -> SealIdentity:
    """The configured certificate and key, or the stack's own (generated the first time)."""
    if certificate and key:
        check_private(Path(key))
        return SealIdentity(Path(certificate).read_bytes(), Path(key).read_bytes())
    key_path, certificate_path = secrets_folder / "cachet.key", secrets_folder / "cachet.pem"
    if not key_path.exists() or not certificate_path.exists():
        made_key = ec.generate_private_key(ec.SECP256R1())
        write_private(key_path, made_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()).decode())
        write_private(certificate_path, _self_signed(made_key, organisation).public_bytes(
            serialization.Encoding.PEM).decode())
    check_private(key_path)
    return SealIdentity(certificate_path.read_bytes(), key_path.read_bytes())


def _self_signed(key: ec.EllipticCurvePrivateKey, organisation: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, t("circuit.seal_name", organisation=organisation)[:64]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation[:64]),
                      x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))


def seal_pdf(document: bytes, identity: SealIdentity, *, reason: str, location: str) -> bytes:
    """The PDF with a PAdES seal (B-B level) and a visible stamp on its last page."""
    key = serialization.load_pem_private_key(identity.key_pem, password=None)
    der_key = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    signer = SimpleSigner(
        signing_cert=asn1_x509.Certificate.load(identity.certificate.public_bytes(serialization.Encoding.DER)),
        signing_key=asn1_keys.PrivateKeyInfo.load(der_key), cert_registry=SimpleCertificateStore())  # type: ignore[no-untyped-call]
    writer = IncrementalPdfFileWriter(io.BytesIO(document), strict=False)
    fields.append_signature_field(writer, fields.SigFieldSpec(SEAL_FIELD, on_page=-1, box=STAMP_BOX))
    metadata = signers.PdfSignatureMetadata(field_name=SEAL_FIELD, subfilter=fields.SigSeedSubFilter.PADES,
                                            md_algorithm="sha256", reason=reason[:200], location=location[:100])
    stamp = TextStampStyle(stamp_text=t("circuit.seal_stamp") + "\n%(signer)s\n%(ts)s", border_width=1)
    sealed = io.BytesIO()
    signers.PdfSigner(metadata, signer=signer, stamp_style=stamp).sign_pdf(writer, output=sealed)
    return sealed.getvalue()


@dataclass(frozen=True)
class ReceiptLine:
    when: dt.datetime
    step: str  # « 2. avis », or empty (the circuit's start, its cancellation…)
    who: str  # « @maire:… » or « @adjoint:… pour @maire:… (délégation) »
    decision: str
    comment: str
    event_id: str
    sha256: str


@dataclass(frozen=True)
class Receipt:
    organisation: str
    number: int
    room: str
    document: str
    archive: str
    sha256: str
    initiator: str
    started: dt.datetime
    finished: dt.datetime
    sealed: bool
    lines: list[ReceiptLine]


def receipt_pdf(receipt: Receipt, zone: ZoneInfo) -> bytes:
    """The validation receipt: what was validated, by whom, when, on which exact version."""
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    regular = _font(pdf, everyday=_written(receipt) <= RECEIPT_CHARACTERS)
    pdf.add_page()
    pdf.set_title(t("circuit.receipt_title", number=receipt.number))
    pdf.set_font(regular, "B", size=15)
    pdf.multi_cell(0, 8, _safe(t("circuit.receipt_title", number=receipt.number), regular),
                   new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(regular, size=10)
    facts = [(t("circuit.receipt_organisation"), receipt.organisation), (t("circuit.receipt_room"), receipt.room),
             (t("circuit.receipt_document"), receipt.document), (t("circuit.receipt_archive"), receipt.archive),
             (t("circuit.receipt_hash"), receipt.sha256), (t("circuit.receipt_initiator"), receipt.initiator),
             (t("circuit.receipt_started"), _when(receipt.started, zone)),
             (t("circuit.receipt_finished"), _when(receipt.finished, zone)),
             (t("circuit.receipt_seal"), t("circuit.receipt_sealed" if receipt.sealed else "circuit.receipt_unsealed"))]
    for label, value in facts:
        pdf.multi_cell(0, 6, _safe(f"{label} : {value}", regular), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font(regular, "B", size=12)
    pdf.cell(0, 8, _safe(t("circuit.receipt_steps"), regular), new_x="LMARGIN", new_y="NEXT")
    for line in receipt.lines:
        pdf.set_font(regular, "B", size=10)
        heading = " — ".join(part for part in (_when(line.when, zone), line.step, line.decision, line.who) if part)
        pdf.multi_cell(0, 6, _safe(heading, regular), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(regular, size=9)
        if line.comment:
            pdf.multi_cell(0, 5, _safe(t("circuit.receipt_comment", comment=line.comment), regular),
                           new_x="LMARGIN", new_y="NEXT")
        pdf.multi_cell(0, 5, _safe(t("circuit.receipt_event", event=line.event_id, sha256=line.sha256), regular),
                       new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
    return bytes(pdf.output())


def _written(receipt: Receipt) -> set[str]:
    texts = [receipt.organisation, receipt.room, receipt.document, receipt.archive, receipt.initiator]
    texts += [part for line in receipt.lines for part in (line.step, line.who, line.decision, line.comment)]
    return set("".join(texts)) - {"\n", "\r", "\t"}


def _font(pdf: FPDF, *, everyday: bool) -> str:
    """DejaVu (Debian's fonts-dejavu-core) writes every French character; without it, the PDF's
    own Helvetica and Latin-1 text (« œ », « — », « ’ » replaced). When the receipt writes
    only ``RECEIPT_CHARACTERS`` (nearly always), DejaVu cut down to them, made once."""
    if not all(Path(path).exists() for path in FONT_FILES):
        return "Helvetica"
    regular, bold = _everyday_fonts() if everyday else FONT_FILES
    pdf.add_font("DejaVu", "", regular)
    pdf.add_font("DejaVu", "B", bold)
    return "DejaVu"


@functools.cache
def _everyday_fonts() -> tuple[str, str]:
    folder = Path(tempfile.mkdtemp(prefix="maillage-polices-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    options = font_subset.Options()  # no hinting nor shaping tables: fpdf2 uses neither here
    options.hinting = False
    options.layout_features = []
    options.drop_tables += ["FFTM", "GSUB", "GPOS", "GDEF", "kern"]
    paths = []
    for source in FONT_FILES:
        font = font_subset.load_font(source, options)
        subsetter = font_subset.Subsetter(options)
        subsetter.populate(unicodes=[ord(character) for character in RECEIPT_CHARACTERS])
        subsetter.subset(font)
        target = folder / Path(source).name
        font_subset.save_font(font, str(target), options)
        paths.append(str(target))
    return paths[0], paths[1]


_LATIN1 = str.maketrans({"—": "-", "–": "-", "’": "'", "«": '"', "»": '"', "…": "...", "œ": "oe", "Œ": "OE",
                         "\u202f": " ", "✅": "", "❌": ""})


def _safe(text: str, font: str) -> str:
    if font == "DejaVu":
        return text
    return text.translate(_LATIN1).encode("latin-1", "replace").decode("latin-1")


def _when(moment: dt.datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%d/%m/%Y %H:%M:%S")
