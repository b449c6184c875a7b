"""Protocol faces: each parses one public wire format into core types and renders core results.

Pure, no I/O. A face is a `*_request` module (parse) and a `*_reply` module (render), or one
module when both are short.
"""
