module gitlab.com/gitlab-org/fleeting/fleeting/metrics/prometheus

go 1.24

require github.com/prometheus/client_golang v1.23.2
