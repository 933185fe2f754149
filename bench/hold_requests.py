"""The benchmark's reference for time to first content: plain mitmdump that, like any addon that
edits requests, holds each request body until it is whole (mitmproxy's default), and streams
responses as they come. The filter's own cost is what it adds over this.

    mitmdump -s bench/hold_requests.py
"""

from mitmproxy import http


class HoldRequests:
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        flow.response.stream = True


addons = [HoldRequests()]
