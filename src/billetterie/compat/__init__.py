"""The S-360 wire surface: RPC routing by module/service/version, envelopes, status codes."""
