-- Argo CD health of a pgpilot SecretRotation (pgpilot.io/v1alpha1).
local function condition(t)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == t then return c end
    end
  end
  return nil
end

local hs = {}
if obj.status == nil or obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to see generation " .. tostring(obj.metadata.generation)
  return hs
end
local stalled = condition("Stalled")
local ready = condition("Ready")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
elseif obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: no rotation starts"
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
else
  -- Blocked (say, on a cluster not created yet): it goes on by itself once that is there.
  hs.status = "Progressing"
  hs.message = ready ~= nil and ready.message or "not rotated yet"
end
return hs
