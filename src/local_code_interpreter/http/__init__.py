"""The HTTP layer shared by every route: `guard` (auth, Host, body limits, access log), `connections` (slow and
idle clients, connection cap), `health` (`/health`, `/ready`), `responses` (the lean `/v1/responses`), `history`
(bounded conversations), `errors` (the OpenAI error shape), `files` (downloads of session files), `aca` (the
Azure Container Apps code interpreter sessions API at `/sessions`)."""
