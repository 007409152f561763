//! Kubernetes manifests of a cloud DP's content endpoint: the DP's instance count is the Deployment's replica
//! count, so `clouddp dp scale` followed by `clouddp dp manifests | kubectl apply -f -` scales the endpoint.

use clouddp_proto::v1 as pb;

/// The Deployment, Service and PodDisruptionBudget of one cloud DP's content endpoint, as YAML.
pub fn content_endpoint(
    dp: &pb::DistributionPoint,
    cloud: &pb::CloudProperties,
    image: &str,
    namespace: &str,
) -> String {
    let name = format!("content-endpoint-{}", cloud.service_name);
    let instances = cloud.instances.max(1);
    // Keep at least one instance serving during voluntary disruptions when there are several.
    let min_available = instances.saturating_sub(1);
    format!(
        "# Content endpoint of cloud distribution point {dp_name} ({dp_id}); service FQDN {fqdn}.
# replicas = the DP's instance count ({instances}); change it with `clouddp dp scale {dp_name} N` and re-apply.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
  labels:
    app.kubernetes.io/name: clouddp-content-endpoint
    clouddp.io/distribution-point: {dp_id}
spec:
  replicas: {instances}
  selector:
    matchLabels:
      app.kubernetes.io/name: clouddp-content-endpoint
      clouddp.io/distribution-point: {dp_id}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: clouddp-content-endpoint
        clouddp.io/distribution-point: {dp_id}
    spec:
      containers:
        - name: content-endpoint
          image: {image}
          args: [\"clouddp-distribution-manager\", \"--role\", \"content-endpoint\", \"--config\", \"/etc/clouddp/distribution-manager.toml\"]
          env:
            - name: CLOUDDP_DM__CONTENT_ENDPOINT__DISTRIBUTION_POINTS
              value: \"{dp_id}\"
          ports:
            - name: https
              containerPort: 7443
          readinessProbe:
            httpGet:
              path: /healthz
              port: https
              scheme: HTTPS
          volumeMounts:
            - name: config
              mountPath: /etc/clouddp
              readOnly: true
      volumes:
        - name: config
          configMap:
            name: clouddp-distribution-manager
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {namespace}
  annotations:
    clouddp.io/service-fqdn: {fqdn}
spec:
  selector:
    app.kubernetes.io/name: clouddp-content-endpoint
    clouddp.io/distribution-point: {dp_id}
  ports:
    - name: https
      port: 443
      targetPort: https
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {name}
  namespace: {namespace}
spec:
  minAvailable: {min_available}
  selector:
    matchLabels:
      clouddp.io/distribution-point: {dp_id}
",
        dp_name = dp.name,
        dp_id = dp.id,
        fqdn = cloud.service_fqdn,
    )
}
