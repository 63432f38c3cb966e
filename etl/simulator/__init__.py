"""The HQ simulator's public face (implementation in etl.hqsim)."""

from etl.hqsim import Dataset, HQSimulator, RequestLog, serve

__all__ = ["Dataset", "HQSimulator", "RequestLog", "serve"]
