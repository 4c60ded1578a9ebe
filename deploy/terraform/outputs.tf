output "service_account" {
  description = "The controller's runtime service account."
  value       = google_service_account.controller.email
}

output "scheduler_service_account" {
  description = "The canary ticks' identity (in ROLLBACK_ALLOWED_PRINCIPALS)."
  value       = google_service_account.scheduler.email
}

output "topics" {
  description = "Pub/Sub topics: alerts (Monitoring -> handle_alert), commands (-> handle_command), events (decisions)."
  value = {
    alerts   = google_pubsub_topic.alerts.id
    commands = google_pubsub_topic.commands.id
    events   = google_pubsub_topic.events.id
  }
}

output "notification_channel" {
  description = "The Pub/Sub notification channel the generated alert policies notify."
  value       = google_monitoring_notification_channel.alerts.id
}

output "http_url" {
  description = "handle_http's URL (cloudfunctions.net); its run.app URL is in http_audiences too."
  value       = google_cloudfunctions2_function.http.url
}

output "http_audiences" {
  description = "ROLLBACK_AUTH_AUDIENCE: mint ID tokens for one of these (gcloud auth print-identity-token --audiences=...)."
  value       = [local.http_url_functions, local.http_url_run]
}

output "functions" {
  description = "Function names by entry point."
  value = {
    handle_alert   = google_cloudfunctions2_function.alert.name
    handle_command = google_cloudfunctions2_function.command.name
    handle_http    = google_cloudfunctions2_function.http.name
  }
}

output "custom_roles" {
  description = "The custom roles created from deploy/permissions.yaml, by group and project."
  value       = { for k, r in google_project_iam_custom_role.controller : k => r.name }
}

output "dashboard" {
  description = "The controller's Cloud Monitoring dashboard."
  value       = google_monitoring_dashboard.controller.id
}
