# The controller's own telemetry: log-based metrics from its structured log lines and a dashboard.
# The definitions live in deploy/telemetry/ (LogMetric and Dashboard in the APIs' own JSON), shared
# with deploy/gcloud/install.sh; tests/deploy checks the filters against real log lines.

locals {
  log_metrics = {
    for f in fileset("${path.module}/../telemetry/metrics", "*.json") :
    trimsuffix(f, ".json") => jsondecode(file("${path.module}/../telemetry/metrics/${f}"))
  }
}

resource "google_logging_metric" "controller" {
  for_each    = local.log_metrics
  project     = var.project
  name        = each.value.name
  description = each.value.description
  filter      = each.value.filter

  label_extractors = lookup(each.value, "labelExtractors", null)
  value_extractor  = lookup(each.value, "valueExtractor", null)

  metric_descriptor {
    metric_kind = each.value.metricDescriptor.metricKind
    value_type  = each.value.metricDescriptor.valueType
    unit        = lookup(each.value.metricDescriptor, "unit", null)

    dynamic "labels" {
      for_each = lookup(each.value.metricDescriptor, "labels", [])
      content {
        key         = labels.value.key
        value_type  = lookup(labels.value, "valueType", "STRING")
        description = lookup(labels.value, "description", null)
      }
    }
  }

  dynamic "bucket_options" {
    for_each = contains(keys(each.value), "bucketOptions") ? [each.value.bucketOptions.explicitBuckets] : []
    content {
      explicit_buckets {
        bounds = bucket_options.value.bounds
      }
    }
  }
}

resource "google_monitoring_dashboard" "controller" {
  project        = var.project
  dashboard_json = file("${path.module}/../telemetry/dashboard.json")
  depends_on     = [google_logging_metric.controller]
}
