"""The iPhone's own wordings (its localizable strings, 2023), language by language: merged into
`whatsapp_lexicon.LEXICON`. Source (docs/whatsapp-languages.md, key wji): starkdmi/whats_json,
`tool/patterns_generator/data/iOS Localizables/<LANG>.strings` (Portuguese: PT-PT.strings). Same
template syntax as `whatsapp_lexicon`."""

from __future__ import annotations

from typing import Any

IOS: dict[str, dict[str, Any]] = {
    "en": {
        "notices": (
            "{A} added {N}",
            "{A} joined using this group's invite link",
            "{A} changed the subject to {Q}",
            "{A} removed {N}",
            "{A} left",
        ),
        "calls": ("Missed voice call",),
        "deleted": ("You deleted this message", "This message was deleted"),
        "omitted": {"image omitted": "image"},
    },
    "es": {
        "notices": (
            "{A} añadió a {N}",
            "{A} se unió usando el enlace de invitación de este grupo",
            "{A} cambió el asunto a {Q}",
            "{A} eliminó a {N}",
            "{A} salió del grupo.",
        ),
        "calls": ("Llamada perdida",),
        "deleted": ("Eliminaste este mensaje", "Se eliminó este mensaje"),
        "omitted": {"imagen omitida": "image"},
    },
    "pt": {
        "notices": (
            "{A} adicionou {N} a este grupo",
            "{A} entrou no grupo através da ligação de convite",
            "O título do grupo foi alterado para {Q} por {A}",
            "{A} removeu {N} do grupo",
            "{A} saiu do grupo",
        ),
        "calls": ("Chamada de voz perdida",),
        "deleted": ("Apagou esta mensagem", "Esta mensagem foi apagada"),
        "omitted": {"imagem não revelada": "image"},
    },
    "hi": {
        "notices": (
            "{A} ने {N} को शामिल किया",
            "{A} आमंत्रण लिंक का इस्तेमाल करके ग्रुप में शामिल हुए/हुईं",
            "{A} ने ग्रुप का नाम बदलकर {Q} किया",
            "{A} ने {N} को हटाया",
            "{A} ने छोड़ा",
        ),
        "calls": ("वॉइस कॉल मिस हुई",),
        "deleted": ("आपने यह मैसेज डिलीट किया", "यह मैसेज डिलीट कर दिया गया है"),
        "omitted": {"फ़ोटो हटाई गई": "image"},
    },
    "id": {
        "notices": (
            "{A} menambahkan {N}",
            "{A} bergabung menggunakan tautan undangan grup ini",
            "{A} telah mengubah subjek menjadi {Q}",
            "{A} mengeluarkan {N}",
            "{A} keluar",
        ),
        "calls": ("Panggilan suara tak terjawab",),
        "deleted": ("Anda menghapus pesan ini", "Pesan ini dihapus"),
        "omitted": {"gambar tidak disertakan": "image"},
    },
    "de": {
        "notices": (
            "{A} hat {N} hinzugefügt.",
            "{A} ist der Gruppe mit dem Einladungslink beigetreten.",
            "{A} hat den Betreff zu {Q} geändert.",
            "{A} hat {N} entfernt.",
            "{A} hat die Gruppe verlassen.",
        ),
        "calls": ("Verpasster Sprachanruf",),
        "deleted": ("Du hast diese Nachricht gelöscht", "Diese Nachricht wurde gelöscht"),
        "omitted": {"Bild weggelassen": "image"},
    },
    "fr": {
        "notices": (
            "{A} a ajouté {N}",
            "{A} a rejoint ce groupe grâce à son lien d'invitation",
            "{A} a remplacé le sujet par {Q}.",
            "{A} a retiré {N}",
            "{A} est parti·e",
        ),
        "calls": ("Appel vocal manqué",),
        "deleted": ("Vous avez supprimé ce message", "Ce message a été supprimé"),
        "omitted": {"image absente": "image"},
    },
    "it": {
        "notices": (
            "{A} ha aggiunto {N}",
            "{A} ha usato il link d'invito per entrare nel gruppo.",
            "{A} ha cambiato l'oggetto in {Q}",
            "{A} ha rimosso {N}",
            "{A} ha abbandonato.",
        ),
        "calls": ("Chiamata vocale persa",),
        "deleted": ("Hai eliminato questo messaggio", "Questo messaggio è stato eliminato"),
        "omitted": {"immagine omessa": "image"},
    },
    "ru": {
        "notices": (
            "{A} добавил(-а) {N}",
            "{A} вступил(-а) в группу, используя приглашение",
            "{A} изменил(-а) тему на {Q}",
            "{A} удалил(-а) {N}",
            "{A} покинул(-а) группу",
        ),
        "calls": ("Пропущенный аудиозвонок",),
        "deleted": ("Вы удалили данное сообщение", "Данное сообщение удалено"),
        "omitted": {"изображение отсутствует": "image"},
    },
    "tr": {
        "notices": (
            "{A}, {N} kişisini ekledi",
            "{A} bu grubun davet bağlantısını kullanarak katıldı",
            "{A} konuyu {Q} olarak değiştirdi",
            "{A}, {N} kişisini çıkardı",
            "{A} ayrıldı",
        ),
        "calls": ("Cevapsız sesli arama",),
        "deleted": ("Bu mesajı sildiniz", "Bu mesaj silindi"),
        "omitted": {"görüntü dahil edilmedi": "image"},
    },
    "ar": {
        "notices": (
            "{A} أضاف {N}",
            "{A} انضم إلى المجموعة عبر استخدام رابط الدعوة الخاص بها",
            "{A} غيّر اسم المجموعة إلى {Q}",
            "{A} أزال {N}",
            "{A} غادر المجموعة",
        ),
        "calls": ("مكالمة صوتية فائتة",),
        "deleted": ("لقد حذَفت هذه الرسالة", "تم حذف هذه الرسالة"),
        "omitted": {"لم يتم إدراج الصورة": "image"},
    },
    "nl": {
        "notices": (
            "{A} heeft {N} toegevoegd",
            "{A} is deelnemer geworden via de uitnodigingslink van deze groep",
            "{A} heeft het onderwerp gewijzigd naar {Q}",
            "{A} heeft {N} verwijderd",
            "{A} heeft de groep verlaten",
        ),
        "calls": ("Gemist spraakgesprek",),
        "deleted": ("U hebt dit bericht verwijderd", "Dit bericht is verwijderd"),
        "omitted": {"afbeelding weggelaten": "image"},
    },
}
