"""Rules shared by every transport (REST handlers now, gRPC next): no web framework in here.

Each rule takes the caller, what it asks for and a privilege lookup, and raises the API's errors
(`api.errors.ApiError`, `api.schema.ParamErrors`), which every transport shapes its own way.
"""
