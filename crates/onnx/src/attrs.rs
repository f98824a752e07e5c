//! A node's attributes by name, each checked to have the type asked for.

use crate::model::describe;
use crate::proto::{attribute_proto::AttributeType, AttributeProto, NodeProto, TensorProto};
use crate::Error;

pub struct Attrs<'m> {
    node: &'m NodeProto,
}

impl<'m> Attrs<'m> {
    pub fn new(node: &'m NodeProto) -> Attrs<'m> {
        Attrs { node }
    }

    pub fn names(&self) -> impl Iterator<Item = &'m str> {
        self.node.attribute.iter().map(|a| a.name())
    }

    /// The attribute `name` if present, checked to be of type `want`.
    /// Models older than IR version 0.0.2 may leave `type` unset: then
    /// `present` (whether the field for `want` holds something) decides.
    fn get(
        &self,
        name: &str,
        want: AttributeType,
        present: impl Fn(&AttributeProto) -> bool,
    ) -> Result<Option<&'m AttributeProto>, Error> {
        let Some(a) = self.node.attribute.iter().find(|a| a.name() == name) else {
            return Ok(None);
        };
        let ok = match a.r#type {
            Some(t) => t == want as i32,
            None => present(a),
        };
        if !ok {
            let found = a
                .r#type
                .and_then(|t| AttributeType::try_from(t).ok())
                .map_or("another type", |t| t.as_str_name());
            return Err(Error::new(format!(
                "{}: attribute '{name}' should be {}, found {found}",
                describe(self.node),
                want.as_str_name()
            )));
        }
        Ok(Some(a))
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, Error> {
        Ok(self
            .get(name, AttributeType::Int, |a| a.i.is_some())?
            .map(|a| a.i()))
    }

    pub fn ints(&self, name: &str) -> Result<Option<&'m [i64]>, Error> {
        Ok(self
            .get(name, AttributeType::Ints, |a| !a.ints.is_empty())?
            .map(|a| a.ints.as_slice()))
    }

    pub fn float(&self, name: &str) -> Result<Option<f32>, Error> {
        Ok(self
            .get(name, AttributeType::Float, |a| a.f.is_some())?
            .map(|a| a.f()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<&'m [f32]>, Error> {
        Ok(self
            .get(name, AttributeType::Floats, |a| !a.floats.is_empty())?
            .map(|a| a.floats.as_slice()))
    }

    /// A string attribute (bytes in the protobuf, UTF-8 by the spec).
    pub fn string(&self, name: &str) -> Result<Option<String>, Error> {
        Ok(self
            .get(name, AttributeType::String, |a| a.s.is_some())?
            .map(|a| String::from_utf8_lossy(a.s.as_deref().unwrap_or_default()).into_owned()))
    }

    pub fn tensor(&self, name: &str) -> Result<Option<&'m TensorProto>, Error> {
        Ok(self
            .get(name, AttributeType::Tensor, |a| a.t.is_some())?
            .and_then(|a| a.t.as_ref()))
    }
}
