"""The gateway's exception tree; each error knows its HTTP status and OpenAI envelope.

GatewayError (500 server_error)
├── InvalidRequestError (400 invalid_request_error, names the param)
│   ├── UnsupportedError (400: the model's backend cannot do this)
│   ├── RequestTooLargeError (413)
│   └── RequestTimeoutError (408: the body did not arrive in time)
├── AuthenticationError (401 invalid_api_key)
├── PermissionDeniedError (403 permission_error)
├── NotFoundError (404)
│   └── ModelNotFoundError (404 model_not_found)
├── MethodNotAllowedError (405)
├── RateLimitError (429 rate_limit_exceeded, Retry-After)
└── UpstreamError (502: the backend answered badly)
    ├── UpstreamUnavailableError (503: the backend cannot be reached)
    └── UpstreamTimeoutError (504: the backend took too long)
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after
        self.backend: str | None = None  # the backend that failed, for logs and metrics

    def to_dict(self) -> dict[str, Any]:
        """Render the OpenAI error envelope."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(GatewayError):
    status = 400
    type = "invalid_request_error"


class RequestTooLargeError(InvalidRequestError):
    status = 413
    code = "request_too_large"


class RequestTimeoutError(InvalidRequestError):
    status = 408
    code = "request_timeout"


class UnsupportedError(InvalidRequestError):
    """The backend serving this model cannot do what was asked (e.g. embeddings on Dify)."""

    code = "unsupported_by_backend"


class AuthenticationError(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFoundError(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class MethodNotAllowedError(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RateLimitError(GatewayError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class UpstreamError(GatewayError):
    status = 502
    type = "server_error"
    code = "bad_gateway"


class UpstreamUnavailableError(UpstreamError):
    status = 503
    type = "service_unavailable_error"
    code = "backend_unavailable"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "backend_timeout"
