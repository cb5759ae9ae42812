"""Security primitives every layer may use: TLS contexts (tls.py) and development TLS material
(certs.py). Imports nothing from ringkv but `errors`, so api/, net/, client/ and cli/ can all
use it. docs/security.md says what each setting protects.
"""
