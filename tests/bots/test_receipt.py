"""The validation receipt writes what it is given, whatever the script: the everyday fonts
(cut down once per process) for the usual text, DejaVu whole for the rest."""

import datetime as dt
import io
from zoneinfo import ZoneInfo

from pypdf import PdfReader

from maillage.bots.documents.circuits.proof import Receipt, ReceiptLine, receipt_pdf

PARIS = ZoneInfo("Europe/Paris")
WHEN = dt.datetime(2026, 3, 29, 0, 30, tzinfo=dt.UTC)  # 01:30 in Paris, the night clocks go forward


def receipt(comment: str) -> Receipt:
    line = ReceiptLine(WHEN, "1. visa", "@karim.benali:mairie", "visé", comment, "$évènement", "ab" * 32)
    return Receipt("Commune de Sœurs-sur-Loire", 12, "Urbanisme", "urbanisme/arrêté.pdf",
                   "Archives/2026/urbanisme/arrêté.pdf", "ab" * 32, "@claire.martin:mairie", WHEN, WHEN, True,
                   [line])


def text_of(pdf: bytes) -> str:
    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def test_receipt_writes_french_typography_with_the_everyday_fonts() -> None:
    text = text_of(receipt_pdf(receipt("Vu l’œuvre — conforme… 3 €"), PARIS))
    assert "Sœurs-sur-Loire" in text and "arrêté.pdf" in text
    assert "l’œuvre — conforme… 3 €" in text
    assert "29/03/2026 01:30:00" in text  # Europe/Paris, not UTC


def test_receipt_with_a_script_outside_the_everyday_fonts_keeps_every_character() -> None:
    text = text_of(receipt_pdf(receipt("Avis de Մարտիրոսյան (ქართული)"), PARIS))
    assert "Մարտիրոսյան" in text and "ქართული" in text
