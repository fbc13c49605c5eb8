"""Wire types and codecs of the Centrifugo client protocol; no I/O here."""
