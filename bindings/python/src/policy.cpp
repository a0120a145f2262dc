// Policies, the policy store and quantities. JSON crosses as text; terminals/__init__.py
// turns it into dicts.
#include <pybind11/stl.h>

#include "common.hpp"
#include "policy_store_handle.hpp"
#include "terminals/policy.hpp"

namespace terminals::python {
namespace {

Caps make_caps(const std::string& max_cpu, const std::string& max_memory, const std::string& max_storage,
               const std::string& allowed_images) {
  return unwrap(parse_caps(max_cpu, max_memory, max_storage, allowed_images));
}

py::dict stored_dict(const StoredPolicy& p) {
  py::dict d;
  d["id"] = p.id;
  d["data"] = p.data;
  d["revision"] = p.revision;
  d["created_at"] = epoch_seconds(p.created_at);
  d["updated_at"] = epoch_seconds(p.updated_at);
  return d;
}

/// Validates `data` as a policy under the store's caps and returns its canonical JSON.
std::string checked(PolicyStoreHandle& h, const std::string& id, const std::string& data) {
  unwrap(check_policy_id(id));
  return policy_to_json(unwrap(parse_policy(data, h.caps())));
}

std::shared_ptr<PolicyStore> open_store(PolicyStoreHandle& h) {
  auto s = h.get();
  if (!s) raise(Error(Errc::Cancelled, "the policy store is closed"));
  return s;
}

}  // namespace

void register_policy(py::module_& m) {
  m.def("_parse_policy",
        [](const std::string& json, const std::string& max_cpu, const std::string& max_memory,
           const std::string& max_storage, const std::string& allowed_images) {
          return policy_to_json(unwrap(parse_policy(json, make_caps(max_cpu, max_memory, max_storage, allowed_images))));
        },
        py::arg("json"), py::arg("max_cpu") = "", py::arg("max_memory") = "", py::arg("max_storage") = "",
        py::arg("allowed_images") = "", "Validates a policy (JSON text) and returns its canonical JSON.");
  m.def("_check_policy_id", [](const std::string& id) { unwrap(check_policy_id(id)); }, py::arg("policy_id"));
  m.def("parse_cpu", [](const std::string& text) { return unwrap(parse_cpu_millis(text)); }, py::arg("text"),
        "CPU in millicores: '2' -> 2000, '500m' -> 500. InvalidArgumentError otherwise.");
  m.def("parse_bytes", [](const std::string& text) { return unwrap(terminals::parse_bytes(text)); }, py::arg("text"),
        "Bytes: '4Gi' -> 4294967296, '512M' -> 512000000. InvalidArgumentError otherwise.");
  m.def("format_cpu", [](std::uint64_t millis) { return format_cpu_millis(millis); }, py::arg("millis"),
        "Canonical CPU spelling: 2000 -> '2', 500 -> '500m'.");
  m.def("format_bytes", [](std::uint64_t bytes) { return terminals::format_bytes(bytes); }, py::arg("bytes"),
        "Canonical byte spelling: 4294967296 -> '4Gi'.");

  py::class_<PolicyStoreHandle, std::shared_ptr<PolicyStoreHandle>>(m, "_PolicyStore")
      .def(py::init([](const std::string& dir, const std::string& max_cpu, const std::string& max_memory,
                       const std::string& max_storage, const std::string& allowed_images) {
             Caps caps = make_caps(max_cpu, max_memory, max_storage, allowed_images);
             PolicyStorePtr store;
             {
               ReleaseGil nogil;
               auto opened = open_file_policy_store(dir);
               if (!opened) raise(std::move(opened).error());
               store = std::move(opened).value();
             }
             return std::make_shared<PolicyStoreHandle>(std::move(store), std::move(caps));
           }),
           py::arg("dir"), py::arg("max_cpu") = "", py::arg("max_memory") = "", py::arg("max_storage") = "",
           py::arg("allowed_images") = "")
      .def("list",
           [](PolicyStoreHandle& h) {
             py::list out;
             for (const auto& p : open_store(h)->list()) out.append(stored_dict(p));
             return out;
           })
      .def("get", [](PolicyStoreHandle& h, const std::string& id) { return stored_dict(unwrap(open_store(h)->get(id))); },
           py::arg("policy_id"))
      .def("create",
           [](PolicyStoreHandle& h, const std::string& id, const std::string& data) {
             std::string json = checked(h, id, data);
             Result<StoredPolicy> r = Error(Errc::Internal, "unset");
             {
               ReleaseGil nogil;  // fsyncs
               r = open_store(h)->create(id, std::move(json));
             }
             return stored_dict(unwrap(std::move(r)));
           },
           py::arg("policy_id"), py::arg("data"))
      .def("put",
           [](PolicyStoreHandle& h, const std::string& id, const std::string& data,
              std::optional<std::uint64_t> expected_revision) {
             std::string json = checked(h, id, data);
             Result<StoredPolicy> r = Error(Errc::Internal, "unset");
             {
               ReleaseGil nogil;
               r = open_store(h)->put(id, std::move(json), expected_revision);
             }
             return stored_dict(unwrap(std::move(r)));
           },
           py::arg("policy_id"), py::arg("data"), py::arg("expected_revision") = py::none())
      .def("remove",
           [](PolicyStoreHandle& h, const std::string& id) {
             Status s;
             {
               ReleaseGil nogil;
               s = open_store(h)->remove(id);
             }
             unwrap(std::move(s));
           },
           py::arg("policy_id"))
      .def("lifecycle", [](PolicyStoreHandle& h, const std::string& id) { return open_store(h)->lifecycle(id); },
           py::arg("policy_id"))
      .def("put_lifecycle",
           [](PolicyStoreHandle& h, const std::string& id, const std::string& data) {
             Status s;
             {
               ReleaseGil nogil;
               s = open_store(h)->put_lifecycle(id, data);
             }
             unwrap(std::move(s));
           },
           py::arg("policy_id"), py::arg("data"))
      .def("close", &PolicyStoreHandle::close, "Releases the store and its directory lock.");
}

}  // namespace terminals::python
