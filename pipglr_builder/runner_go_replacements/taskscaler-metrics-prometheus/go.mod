module gitlab.com/gitlab-org/fleeting/taskscaler/metrics/prometheus

go 1.24

require github.com/prometheus/client_golang v1.23.2
