"""The Telegram network: people's own MTProto sessions (Telethon), linked by QR code or phone
code with the cloud password."""
