"""Peer methods compared with SDTP: LLMLingua (prompt compression) and kvpress (KV-cache compression)."""
