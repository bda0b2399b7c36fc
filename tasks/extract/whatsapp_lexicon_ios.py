"""The iPhone's own wordings (its localizable strings, 2023), language by language: merged into
`whatsapp_lexicon.LEXICON`. Source (docs/whatsapp-languages.md, key wji): starkdmi/whats_json,
`tool/patterns_generator/data/iOS Localizables/<LANG>.strings` (Portuguese: PT-PT.strings). Same
template syntax as `whatsapp_lexicon`.

`TIMERS_AND_CALLS` (same source and files) adds, per language, the missed video call and the
missed group voice and video calls, and the disappearing-message notices (turned on or off, by
someone, by "you", or without a name); `BRAZIL` adds what an iPhone set to Brazilian Portuguese
writes (`PT-BR.strings`): its placeholders (`imagem ocultada`), notices, calls and the deleted
placeholder. Both are merged into `IOS` below."""

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


TIMERS_AND_CALLS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "calls": (
            "Missed video call",
            "Missed group voice call",
            "Missed group video call",
        ),
        "notices": (
            "{A} turned on disappearing messages.",
            "{A} turned off disappearing messages.",
            "You turned on disappearing messages.",
            "You turned off disappearing messages.",
            "Disappearing messages were turned on.",
            "Disappearing messages were turned off.",
        ),
    },
    "es": {
        "calls": (
            "Videollamada perdida",
            "Llamada grupal perdida",
            "Videollamada grupal perdida",
        ),
        "notices": (
            "{A} activó los mensajes temporales.",
            "{A} desactivó los mensajes temporales.",
            "Activaste los mensajes temporales.",
            "Desactivaste los mensajes temporales.",
            "Se activaron los mensajes temporales.",
            "Se desactivaron los mensajes temporales.",
        ),
    },
    "pt": {
        "calls": (
            "Videochamada perdida",
            "Chamada de voz em grupo perdida",
            "Videochamada em grupo perdida",
        ),
        "notices": (
            "{A} ativou as mensagens temporárias.",
            "{A} desativou as mensagens temporárias.",
            "Ativou as mensagens temporárias.",
            "Desativou as mensagens temporárias.",
            "As mensagens temporárias foram ativadas.",
            "As mensagens temporárias foram desativadas.",
        ),
    },
    "hi": {
        "calls": (
            "मिस्ड वीडियो कॉल",
            "ग्रुप वॉइस कॉल मिस हुई",
            "मिस्ड ग्रुप वीडियो कॉल",
        ),
        "notices": (
            "{A} ने 'गायब होने वाले मैसेज' मोड को ऑन किया.",
            "{A} ने 'गायब होने वाले मैसेज' मोड को ऑफ़ किया.",
            "आपने 'गायब होने वाले मैसेज' मोड को ऑन किया.",
            "आपने 'गायब होने वाले मैसेज' मोड को ऑफ़ किया.",
            "'गायब होने वाले मैसेज' मोड को ऑन किया गया.",
            "'गायब होने वाले मैसेज' मोड को ऑफ़ किया गया.",
        ),
    },
    "id": {
        "calls": (
            "Panggilan video tak terjawab",
            "Panggilan suara grup tak terjawab",
            "Panggilan video grup tak terjawab",
        ),
        "notices": (
            "{A} menyalakan pesan sementara.",
            "{A} mematikan pesan sementara.",
            "Anda menyalakan pesan sementara.",
            "Anda mematikan pesan sementara.",
            "Pesan sementara dinyalakan.",
            "Pesan sementara dimatikan.",
        ),
    },
    "de": {
        "calls": (
            "Verpasster Videoanruf",
            "Verpasster Gruppen-Sprachanruf",
            "Verpasster Gruppen-Videoanruf",
        ),
        "notices": (
            "{A} hat selbstlöschende Nachrichten aktiviert.",
            "{A} hat selbstlöschende Nachrichten deaktiviert.",
            "Du hast selbstlöschende Nachrichten aktiviert.",
            "Du hast selbstlöschende Nachrichten deaktiviert.",
            "Selbstlöschende Nachrichten wurden aktiviert.",
            "Selbstlöschende Nachrichten wurden deaktiviert.",
        ),
    },
    "fr": {
        "calls": (
            "Appel vidéo manqué",
            "Appel vocal de groupe manqué",
            "Appel vidéo de groupe manqué",
        ),
        "notices": (
            "{A} a activé les messages éphémères.",
            "{A} a désactivé les messages éphémères.",
            "Vous avez activé les messages éphémères.",
            "Vous avez désactivé les messages éphémères.",
            "Les messages éphémères ont été activés.",
            "Les messages éphémères ont été désactivés.",
        ),
    },
    "it": {
        "calls": (
            "Videochiamata persa",
            "Chiamata vocale di gruppo persa",
            "Videochiamata di gruppo persa",
        ),
        "notices": (
            "{A} ha attivato i messaggi effimeri.",
            "{A} ha disattivato i messaggi effimeri.",
            "Hai attivato i messaggi effimeri.",
            "Hai disattivato i messaggi effimeri.",
            "Sono stati attivati i messaggi effimeri.",
            "Sono stati disattivati i messaggi effimeri.",
        ),
    },
    "ru": {
        "calls": (
            "Пропущенный видеозвонок",
            "Пропущенный групповой аудиозвонок",
            "Пропущенный групповой видеозвонок",
        ),
        "notices": (
            "{A} включил(-а) исчезающие сообщения.",
            "{A} отключил(-а) исчезающие сообщения.",
            "Вы включили исчезающие сообщения.",
            "Вы отключили исчезающие сообщения.",
            "Исчезающие сообщения включены.",
            "Исчезающие сообщения отключены.",
        ),
    },
    "tr": {
        "calls": (
            "Cevapsız görüntülü arama",
            "Cevapsız sesli grup araması",
            "Cevapsız görüntülü grup araması",
        ),
        "notices": (
            "{A} süreli mesajları etkinleştirdi.",
            "{A} süreli mesajları devre dışı bıraktı.",
            "Süreli mesajları etkinleştirdiniz.",
            "Süreli mesajları devre dışı bıraktınız.",
            "Süreli mesajlar etkinleştirildi.",
            "Süreli mesajlar devre dışı bırakıldı.",
        ),
    },
    "ar": {
        "calls": (
            "مكالمة فيديو فائتة",
            "مكالمة صوتية جماعية فائتة",
            "مكالمة فيديو جماعية فائتة",
        ),
        "notices": (
            "فعّلت جهة الاتصال {A} خاصية الرسائل ذاتية الاختفاء.",
            "أوقفت جهة الاتصال {A} تفعيل خاصية الرسائل ذاتية الاختفاء.",
            "أوقفت جهة الاتصال {A} تشغيل خاصية الرسائل ذاتية الاختفاء.",
            "لقد فعّلت خاصية الرسائل ذاتية الاختفاء.",
            "لقد أوقفت خاصية الرسائل ذاتية الاختفاء.",
            "لقد أوقفت تفعيل خاصية الرسائل ذاتية الاختفاء.",
            "تم تفعيل خاصية الرسائل ذاتية الاختفاء.",
            "تم إيقاف تفعيل خاصية الرسائل ذاتية الاختفاء.",
            "تم إيقاف خاصية الرسائل ذاتية الاختفاء.",
        ),
    },
    "nl": {
        "calls": (
            "Gemist videogesprek",
            "Gemist groepsgesprek",
            "Gemist groepsvideogesprek",
        ),
        "notices": (
            "{A} heeft berichten met vervaldatum uitgeschakeld.",
            "U hebt berichten met vervaldatum ingeschakeld.",
            "U hebt berichten met vervaldatum uitgeschakeld.",
            "Berichten met vervaldatum zijn ingeschakeld.",
            "Berichten met vervaldatum zijn uitgeschakeld.",
        ),
    },
}

BRAZIL: dict[str, Any] = {
    "notices": (
        "{A} adicionou {N}",
        "{A} entrou usando o link de convite deste grupo",
        "{A} mudou o nome do grupo para {Q}",
        "{A} removeu {N}",
        "{A} saiu",
        "{A} desativou as mensagens temporárias",
        "Você ativou as mensagens temporárias.",
        "Você desativou as mensagens temporárias",
        "As mensagens temporárias foram desativadas",
    ),
    "calls": ("Chamada de vídeo perdida", "Chamada de vídeo em grupo perdida"),
    "deleted": ("Mensagem apagada",),
    "omitted": {
        "imagem ocultada": "image",
        "vídeo omitido": "video",
        "áudio ocultado": "audio",
        "figurinha omitida": "sticker",
        "GIF omitido": "gif",
        "documento omitido": "document",
        "Cartão do contato omitido": "contact card",
    },
}

for _code, _extra in (*TIMERS_AND_CALLS.items(), ("pt", BRAZIL)):
    for _key, _value in _extra.items():
        if isinstance(_value, dict):
            IOS[_code][_key] = {**IOS[_code].get(_key, {}), **_value}
        else:
            IOS[_code][_key] = tuple(dict.fromkeys((*IOS[_code].get(_key, ()), *_value)))
