# Canary ticks: one Cloud Scheduler job per target project, POST /canary/tick with an OIDC token
# of the scheduler's service account (allowed in ROLLBACK_ALLOWED_PRINCIPALS, invoker on handle_http).

resource "google_cloud_scheduler_job" "canary_tick" {
  for_each    = var.canary_tick_schedule == null ? toset([]) : toset(local.targets)
  project     = var.project
  region      = var.region
  name        = "${var.name_prefix}-canary-tick-${each.value}"
  description = "Advance the canaries of ${each.value} one step (every region in ROLLBACK_REGIONS)"
  schedule    = var.canary_tick_schedule
  time_zone   = "Etc/UTC"
  # A tick that overlaps the next one is harmless (the ledger's etag serialises writes), but a
  # tick older than the function's timeout has already been answered.
  attempt_deadline = "${var.function_timeout_seconds + 30}s"

  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "${google_cloudfunctions2_function.http.service_config[0].uri}/canary/tick"
    headers = {
      "Content-Type" = "application/json"
    }
    body = base64encode(jsonencode({ project = each.value }))

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      # One of the audiences in ROLLBACK_AUTH_AUDIENCE (and a URL of the service, which Cloud Run's
      # own IAM check accepts).
      audience = local.http_url_run
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.http_invokers, google_project_service.apis]
}
