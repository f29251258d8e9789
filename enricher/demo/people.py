"""Made-up customers: Indonesian-looking names, WhatsApp phone numbers and chat lines.

Everything here is pure: each function takes the random generator to draw from.
"""

from __future__ import annotations

import random

FIRST_NAMES = (
    "Budi", "Siti", "Dewi", "Agus", "Rina", "Andi", "Putri", "Joko", "Wulan", "Eko",
    "Fitri", "Hendra", "Indah", "Yusuf", "Ayu", "Rudi", "Sri", "Bayu", "Nur", "Dimas",
    "Lestari", "Fajar", "Maya", "Rizky", "Intan", "Teguh", "Ratna", "Arif", "Yanti", "Hadi",
    "Bambang", "Kartika", "Slamet", "Novi", "Wahyu", "Retno", "Irfan", "Desi", "Gilang", "Mega",
)  # fmt: skip
LAST_NAMES = (
    "Santoso", "Rahayu", "Lestari", "Wijaya", "Saputra", "Hidayat", "Kusuma", "Pratama",
    "Setiawan", "Nugroho", "Siregar", "Hasibuan", "Simanjuntak", "Wibowo", "Gunawan",
    "Susanto", "Halim", "Purnomo", "Syahputra", "Maharani", "Permata", "Utami", "Situmorang",
    "Ramadhan", "Firmansyah", "Anggraini", "Sihombing", "Tanjung", "Wulandari", "Prasetyo",
)  # fmt: skip
CUSTOMER_LINES = (
    "Halo, saya mau tanya soal tagihan bulan ini",
    "Selamat siang, apakah bisa minta keringanan cicilan?",
    "Saya sudah transfer tadi pagi, mohon dicek",
    "Kapan jatuh tempo pembayaran saya?",
    "Bisa kirim nomor virtual account lagi?",
    "Maaf baru balas, kemarin sibuk",
    "Apakah ada denda kalau telat bayar?",
    "Saya mau lunasi sekarang, totalnya berapa?",
    "Terima kasih infonya",
    "Oke, nanti sore saya bayar",
    "Bisa dibantu untuk restrukturisasi?",
    "Nomor rekening tujuan yang mana ya?",
    "Sudah saya kirim bukti transfernya",
    "Tolong hubungi saya besok pagi",
    "Apakah bisa bayar setengah dulu?",
)
AGENT_LINES = (
    "Baik, kami cek dulu ya Bapak/Ibu",
    "Terima kasih, pembayaran sudah kami terima",
    "Jatuh tempo tanggal 25 bulan ini",
    "Nomor VA sudah kami kirim ulang",
    "Mohon ditunggu, sedang kami proses",
    "Bisa, kami bantu ajukan keringanan",
)
LOAN_TYPES = ("personal_loan", "multiguna", "kredit_motor", "kredit_mobil", "paylater")
LEADS_STATUSES = ("cold", "warm", "hot", "promise_to_pay", "paid")
CONTACT_STATUSES = ("uncontacted", "contacted", "reachable", "unreachable")


def name(rng: random.Random) -> str:
    """A full name such as ``Budi Santoso``."""
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def phone(rng: random.Random) -> str:
    """A WhatsApp number of an Indonesian mobile phone: ``628`` and 9 to 10 more digits."""
    rest = "".join(rng.choice("0123456789") for _ in range(rng.randint(8, 9)))
    return f"628{rng.randint(1, 9)}{rest}"


def customer_line(rng: random.Random) -> str:
    """What a customer writes."""
    return rng.choice(CUSTOMER_LINES)


def agent_line(rng: random.Random) -> str:
    """What an agent answers."""
    return rng.choice(AGENT_LINES)


def lead_fields(rng: random.Random) -> dict[str, object]:
    """The lead fields REST adds to ``id, name, phone``: amounts in rupiah, statuses."""
    return {
        "outstanding": rng.randrange(1_000_000, 150_000_000, 50_000),
        "loan_type": rng.choice(LOAN_TYPES),
        "leads_status": rng.choice(LEADS_STATUSES),
        "contact_status": rng.choice(CONTACT_STATUSES),
    }
