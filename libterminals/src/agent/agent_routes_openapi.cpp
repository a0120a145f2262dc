// The agent's /info and /openapi.json. (Being written: registers nothing yet.)
#include "agent/agent_internal.hpp"

namespace terminals::detail {

void add_openapi_routes(AgentRouter&, const std::shared_ptr<AgentState>&) {}

}  // namespace terminals::detail
